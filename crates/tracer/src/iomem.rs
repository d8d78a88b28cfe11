//! /proc/iomem, read once: every consumer (System RAM, the kernel image's place, the device
//! resources of the start state) walks these lines instead of parsing the text again.
//!
//! Format (kernel/resource.c `r_show`): `%*s%0*llx-%0*llx : %s`, two spaces of indent per
//! nesting level, both addresses inclusive, in hex. Without root the addresses read as zero.

/// One resource line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource<'a> {
    /// Nesting level: 0 for a top-level resource.
    pub depth: usize,
    pub start: u64,
    /// The last byte (inclusive, as the file prints it).
    pub last: u64,
    pub name: &'a str,
}

/// The resources of `text` in file order; lines that do not parse are skipped.
pub fn resources(text: &str) -> impl Iterator<Item = Resource<'_>> {
    text.lines().filter_map(|line| {
        let depth = (line.len() - line.trim_start().len()) / 2;
        let (range, name) = line.trim_start().split_once(" : ")?;
        let (a, b) = range.split_once('-')?;
        Some(Resource {
            depth,
            start: u64::from_str_radix(a.trim(), 16).ok()?,
            last: u64::from_str_radix(b.trim(), 16).ok()?,
            name: name.trim(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_the_kernel_prints_them() {
        let text = "00000000-00000fff : Reserved\n00100000-bffdffff : System RAM\n  01000000-01e00d7f : Kernel code\nfd000000-fdffffff : 0000:00:02.0\nbad line\n";
        let r: Vec<_> = resources(text).collect();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[2],
            Resource {
                depth: 1,
                start: 0x0100_0000,
                last: 0x01e0_0d7f,
                name: "Kernel code"
            }
        );
        assert_eq!(r[3].name, "0000:00:02.0");
    }
}
