//! Fork: `copy_page_range`, PAT's strict reservation for the child (`track_pfn_copy`), and the
//! PTEs the child inherits.

use pfnscope_abi::bits::{PAGE_SHIFT, errno};
use pfnscope_abi::{Cache, Hook};

use super::state::{ForkCopy, Pte, RamKind};
use super::{MAX_WALK, Model, hex, num, show_ret, space};
use crate::memtype::Owner;
use crate::report::Sink;
use crate::rules::Rule;
use crate::tree::Tree;

/// Tasks that load modules: a driver's probe runs in them, and what it reserves belongs to the
/// device, not to the loader that exits right after (kernel/module/main.c:do_init_module).
const MODULE_LOADERS: &[&str] = &["insmod", "modprobe", "kmod"];

impl<S: Sink> Model<S> {
    /// Who owns a `memtype_reserve`: a root call (no traced mapping context) belongs to its
    /// process, unless that process is loading a module.
    pub(super) fn reserve_owner(&self, t: &Tree, i: usize) -> Owner {
        let r = t.nodes[i].rec();
        let loader = MODULE_LOADERS.iter().any(|l| r.comm().as_str() == *l);
        if i == 0 && !loader {
            Owner::Process {
                pid: r.pid(),
                exited: false,
            }
        } else {
            Owner::Other
        }
    }

    /// `sched_process_exit` of a thread-group leader: its process is gone, and so is every
    /// reason to keep what it reserved.
    pub(super) fn process_exit(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        if r.tid() != r.pid() {
            return;
        }
        let pid = r.pid();
        for o in self.pats.memtypes.owners_mut() {
            if *o == (Owner::Process { pid, exited: false }) {
                *o = Owner::Process { pid, exited: true };
            }
        }
    }

    /// `sched_process_fork`: the PTEs the parent's copies made are the child's from its first
    /// call on.
    pub(super) fn process_fork(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        if let (Some(child), Some(copies)) = (r.child_pid(), self.forks.pending.remove(&r.pid())) {
            self.forks
                .child_pending
                .entry(child)
                .or_default()
                .extend(copies);
            if self.forks.not_child == Some(child) {
                self.forks.not_child = None;
            }
        }
    }

    /// `track_pfn_copy`; returns its return value.
    pub(super) fn track_copy(&mut self, t: &Tree, i: usize) -> Option<i64> {
        let r = t.nodes[i].rec();
        let reserve = t.kid(i, |h| h == Hook::MemtypeReserve);
        let free = t.kid(i, |h| h == Hook::MemtypeFree);
        let (Some(vm), Some(vs), Some(ve)) = (r.vma_flags(), r.vma_start(), r.vma_end()) else {
            self.nc(Rule::ForkCopy);
            self.visit_kids(t, i, None, |_| true);
            return r.ret();
        };
        let has_pat = self.bits.pat != 0 && vm & self.bits.pat != 0;
        let owner = Owner::Fork {
            parent_pid: r.pid(),
            failed: false,
        };
        if !has_pat {
            self.check(
                Rule::ForkCopy,
                reserve.is_none() && r.ret() == Some(0),
                &[r],
                || {
                    (
                        "0 and no reservation (no VM_PAT)".into(),
                        format!("{} (reserve: {})", show_ret(r.ret()), reserve.is_some()),
                    )
                },
            );
        } else {
            let first = self
                .ptes
                .map
                .get(&(space(r), vs >> PAGE_SHIFT))
                .copied()
                .filter(|p| p.known);
            match first {
                Some(p) if p.anon => {
                    if r.ret().is_some_and(|v| v != 0) {
                        self.find(
                            Rule::FindForkCow,
                            &[r],
                            r.driver(),
                            || format!("fork failed ({}) because the first page was COWed: vma {vs:#x}..{ve:#x}", show_ret(r.ret())),
                        );
                    } else {
                        self.nc(Rule::ForkCopy);
                    }
                }
                // reserve_pfn_range's RAM branch compares with lookup_memtype, warns, and
                // returns 0: RAM is not refcounted, nothing is reserved, strict or not
                // (arch/x86/mm/pat/memtype.c:reserve_pfn_range).
                Some(Pte {
                    pfn: Some(pfn),
                    special: Some(true),
                    ..
                }) if self.mem.ram_kind(pfn, ve.saturating_sub(vs) >> PAGE_SHIFT)
                    == RamKind::Ram =>
                {
                    self.check(
                        Rule::ForkCopy,
                        reserve.is_none() && r.ret() == Some(0),
                        &[r],
                        || {
                            (
                                format!("0 and no reservation (pfn {pfn:#x} is RAM)"),
                                format!("{} (reserve: {})", show_ret(r.ret()), reserve.is_some()),
                            )
                        },
                    );
                }
                Some(Pte {
                    pfn: Some(pfn),
                    cache: Some(c),
                    special: Some(true),
                    ..
                }) => match reserve {
                    None => self.diverge(
                        Rule::ForkCopy,
                        &[r],
                        format!(
                            "a strict memtype_reserve of pfn {pfn:#x}, {} bytes, {}",
                            ve.saturating_sub(vs),
                            c.name()
                        ),
                        "none".into(),
                    ),
                    Some(k) => {
                        let rr = t.nodes[k].rec();
                        let req = rr.cache_req().as_deref().and_then(Cache::parse);
                        self.check(
                            Rule::ForkCopy,
                            rr.pfn() == Some(pfn)
                                && rr.size() == Some(ve.saturating_sub(vs))
                                && req == Some(c),
                            &[r, rr],
                            || {
                                (
                                    format!(
                                        "memtype_reserve of pfn {pfn:#x}, {} bytes, {}",
                                        ve.saturating_sub(vs),
                                        c.name()
                                    ),
                                    format!(
                                        "pfn {}, size {}, {}",
                                        hex(rr.pfn()),
                                        num(rr.size()),
                                        req.map_or("unknown", Cache::name)
                                    ),
                                )
                            },
                        );
                        let newt = self.reserve(t, k, owner);
                        let expected = match rr.ret() {
                            Some(e) if e != 0 => Some(e),
                            Some(0) if newt.is_some_and(|n| n != c) => Some(errno::EINVAL),
                            Some(0) => Some(0),
                            _ => None,
                        };
                        match expected {
                            Some(e) => {
                                let free_ok = if e == errno::EINVAL && rr.ret() == Some(0) {
                                    free.is_some()
                                } else {
                                    free.is_none()
                                };
                                self.check(
                                    Rule::ForkCopy,
                                    r.ret() == Some(e) && free_ok,
                                    &[r, rr],
                                    || {
                                        (
                                            format!("{e} (strict reservation)"),
                                            format!(
                                                "{} (free: {})",
                                                show_ret(r.ret()),
                                                free.is_some()
                                            ),
                                        )
                                    },
                                );
                            }
                            None => self.nc(Rule::ForkCopy),
                        }
                    }
                },
                _ => {
                    if let Some(k) = reserve {
                        let rr = t.nodes[k].rec();
                        let rret = rr.ret();
                        self.reserve(t, k, owner);
                        if let Some(e) = rret.filter(|e| *e != 0) {
                            self.check(Rule::ForkCopy, r.ret() == Some(e), &[r, rr], || {
                                (format!("{e}"), show_ret(r.ret()))
                            });
                        } else {
                            self.nc(Rule::ForkCopy);
                        }
                    } else {
                        self.nc(Rule::ForkCopy);
                    }
                }
            }
        }
        self.visit_kids(t, i, None, |h| h != Hook::MemtypeReserve);
        r.ret()
    }

    pub(super) fn fork_copy(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        let b = self.bits;
        self.vma_due(r);
        let pfnmap = r.vma_flags().is_some_and(|vm| vm & b.pfnmap != 0);
        let track = t.kid(i, |h| h == Hook::TrackPfnCopy);
        if self.f.fork_track && pfnmap && self.attached(Hook::TrackPfnCopy) {
            self.check(Rule::ForkCopy, track.is_some(), &[r], || {
                ("track_pfn_copy for a VM_PFNMAP vma".into(), "none".into())
            });
        }
        let tr = match track {
            Some(k) => self.track_copy(t, k),
            None => None,
        };
        if let Some(v) = r.ret() {
            match tr {
                Some(e) if e != 0 => self.check(Rule::ForkCopy, v == e, &[r], || {
                    (format!("track_pfn_copy's error {e}"), format!("{v}"))
                }),
                Some(_) | None if track.is_some() || !pfnmap || !self.f.fork_track => {
                    self.check(Rule::ForkCopy, v == 0 || v == errno::ENOMEM, &[r], || {
                        ("0 or -ENOMEM".into(), format!("{v}"))
                    })
                }
                _ => {}
            }
        }
        self.visit_kids(t, i, None, |h| h != Hook::TrackPfnCopy);
        let sp = space(r);
        if r.ret() == Some(0) {
            if let (Some(vs), Some(ve)) = (r.vma_start(), r.vma_end()) {
                let (first, n) = (vs >> PAGE_SHIFT, ve.saturating_sub(vs) >> PAGE_SHIFT);
                let mut copy = ForkCopy { ptes: Vec::new() };
                if n <= MAX_WALK {
                    for pg in first..first.saturating_add(n) {
                        if let Some(p) = self.ptes.map.get(&(sp, pg)) {
                            copy.ptes.push((pg, *p));
                        }
                    }
                }
                if !copy.ptes.is_empty() {
                    self.forks.pending.entry(r.pid()).or_default().push(copy);
                }
            }
        } else if tr == Some(0) {
            for o in self.pats.memtypes.owners_mut() {
                if *o
                    == (Owner::Fork {
                        parent_pid: r.pid(),
                        failed: false,
                    })
                {
                    *o = Owner::Fork {
                        parent_pid: r.pid(),
                        failed: true,
                    };
                }
            }
        }
    }
}
