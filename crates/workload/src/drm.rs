//! The few DRM uapi structures and ioctls the DRM workloads need (from `include/uapi/drm/drm.h`
//! and `drm_mode.h`), defined here so the guest binary needs no libdrm.

use std::os::fd::OwnedFd;

use anyhow::{Result, bail};

use crate::sys::{self, ioctl};

const fn iowr<T>(nr: u32) -> libc::c_ulong {
    // _IOC(_IOC_READ|_IOC_WRITE, 'd', nr, sizeof(T))
    ((3u32 << 30) | ((std::mem::size_of::<T>() as u32) << 16) | ((b'd' as u32) << 8) | nr)
        as libc::c_ulong
}

#[repr(C)]
#[derive(Default)]
pub struct Version {
    pub major: i32,
    pub minor: i32,
    pub patchlevel: i32,
    pub name_len: usize,
    pub name: u64,
    pub date_len: usize,
    pub date: u64,
    pub desc_len: usize,
    pub desc: u64,
}

#[repr(C)]
#[derive(Default, Debug)]
pub struct CreateDumb {
    pub height: u32,
    pub width: u32,
    pub bpp: u32,
    pub flags: u32,
    pub handle: u32,
    pub pitch: u32,
    pub size: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct MapDumb {
    pub handle: u32,
    pub pad: u32,
    pub offset: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct DestroyDumb {
    pub handle: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct CardRes {
    pub fb_id_ptr: u64,
    pub crtc_id_ptr: u64,
    pub connector_id_ptr: u64,
    pub encoder_id_ptr: u64,
    pub count_fbs: u32,
    pub count_crtcs: u32,
    pub count_connectors: u32,
    pub count_encoders: u32,
    pub min_width: u32,
    pub max_width: u32,
    pub min_height: u32,
    pub max_height: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct GetConnector {
    pub encoders_ptr: u64,
    pub modes_ptr: u64,
    pub props_ptr: u64,
    pub prop_values_ptr: u64,
    pub count_modes: u32,
    pub count_props: u32,
    pub count_encoders: u32,
    pub encoder_id: u32,
    pub connector_id: u32,
    pub connector_type: u32,
    pub connector_type_id: u32,
    pub connection: u32,
    pub mm_width: u32,
    pub mm_height: u32,
    pub subpixel: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct ModeInfo {
    pub clock: u32,
    pub hdisplay: u16,
    pub hsync_start: u16,
    pub hsync_end: u16,
    pub htotal: u16,
    pub hskew: u16,
    pub vdisplay: u16,
    pub vsync_start: u16,
    pub vsync_end: u16,
    pub vtotal: u16,
    pub vscan: u16,
    pub vrefresh: u32,
    pub flags: u32,
    pub type_: u32,
    pub name: [u8; 32],
}

#[repr(C)]
#[derive(Default)]
pub struct FbCmd {
    pub fb_id: u32,
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
    pub bpp: u32,
    pub depth: u32,
    pub handle: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct Crtc {
    pub set_connectors_ptr: u64,
    pub count_connectors: u32,
    pub crtc_id: u32,
    pub fb_id: u32,
    pub x: u32,
    pub y: u32,
    pub gamma_size: u32,
    pub mode_valid: u32,
    pub mode: ModeInfo,
}

pub const IOCTL_VERSION: libc::c_ulong = iowr::<Version>(0x00);
pub const IOCTL_MODE_GETRESOURCES: libc::c_ulong = iowr::<CardRes>(0xA0);
pub const IOCTL_MODE_SETCRTC: libc::c_ulong = iowr::<Crtc>(0xA2);
pub const IOCTL_MODE_GETCONNECTOR: libc::c_ulong = iowr::<GetConnector>(0xA7);
pub const IOCTL_MODE_ADDFB: libc::c_ulong = iowr::<FbCmd>(0xAE);
pub const IOCTL_MODE_RMFB: libc::c_ulong = iowr::<u32>(0xAF);
pub const IOCTL_MODE_CREATE_DUMB: libc::c_ulong = iowr::<CreateDumb>(0xB2);
pub const IOCTL_MODE_MAP_DUMB: libc::c_ulong = iowr::<MapDumb>(0xB3);
pub const IOCTL_MODE_DESTROY_DUMB: libc::c_ulong = iowr::<DestroyDumb>(0xB4);

/// The driver name of an open DRM device.
pub fn driver_name(fd: &OwnedFd) -> Result<String> {
    let mut name = [0u8; 64];
    let mut v = Version {
        name_len: name.len(),
        name: name.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: DRM_IOCTL_VERSION takes a struct drm_version; the buffers outlive the call.
    unsafe { ioctl(fd, IOCTL_VERSION, &mut v, "DRM_IOCTL_VERSION")? };
    let n = v.name_len.min(name.len());
    Ok(String::from_utf8_lossy(&name[..n]).into_owned())
}

/// Opens the `/dev/dri/card*` whose driver name starts with `driver` (bochs shows as
/// `bochs-drm`; vgem is card1 when bochs is loaded, card0 otherwise).
pub fn open_card(driver: &str) -> Result<(String, OwnedFd)> {
    let mut seen = Vec::new();
    let mut cards: Vec<_> = std::fs::read_dir("/dev/dri")
        .map_err(|e| anyhow::anyhow!("/dev/dri: {e} (is the DRM driver loaded?)"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("card"))
        })
        .collect();
    cards.sort();
    for path in cards {
        let p = path.to_string_lossy().into_owned();
        let fd = sys::open(&p, libc::O_RDWR)?;
        let name = driver_name(&fd)?;
        if name.starts_with(driver) {
            return Ok((p, fd));
        }
        seen.push(format!("{p}={name}"));
    }
    bail!("no DRM card with driver {driver}; found: {seen:?}")
}

pub fn create_dumb(fd: &OwnedFd, width: u32, height: u32) -> Result<CreateDumb> {
    let mut c = CreateDumb {
        width,
        height,
        bpp: 32,
        ..Default::default()
    };
    // SAFETY: matching struct for the ioctl.
    unsafe { ioctl(fd, IOCTL_MODE_CREATE_DUMB, &mut c, "MODE_CREATE_DUMB")? };
    Ok(c)
}

pub fn map_dumb(fd: &OwnedFd, handle: u32) -> Result<u64> {
    let mut m = MapDumb {
        handle,
        ..Default::default()
    };
    // SAFETY: matching struct for the ioctl.
    unsafe { ioctl(fd, IOCTL_MODE_MAP_DUMB, &mut m, "MODE_MAP_DUMB")? };
    Ok(m.offset)
}

pub fn destroy_dumb(fd: &OwnedFd, handle: u32) -> Result<()> {
    let mut d = DestroyDumb { handle };
    // SAFETY: matching struct for the ioctl.
    unsafe { ioctl(fd, IOCTL_MODE_DESTROY_DUMB, &mut d, "MODE_DESTROY_DUMB") }
}

/// The first connected connector, a CRTC for it and its preferred (else first) mode.
pub struct Output {
    pub connector: u32,
    pub crtc: u32,
    pub mode: ModeInfo,
}

pub fn first_output(fd: &OwnedFd) -> Result<Output> {
    let mut res = CardRes::default();
    // SAFETY: matching struct; first call only counts.
    unsafe { ioctl(fd, IOCTL_MODE_GETRESOURCES, &mut res, "MODE_GETRESOURCES")? };
    let mut crtcs = vec![0u32; res.count_crtcs as usize];
    let mut conns = vec![0u32; res.count_connectors as usize];
    let mut res2 = CardRes {
        crtc_id_ptr: crtcs.as_mut_ptr() as u64,
        count_crtcs: res.count_crtcs,
        connector_id_ptr: conns.as_mut_ptr() as u64,
        count_connectors: res.count_connectors,
        ..Default::default()
    };
    // SAFETY: the arrays are as long as the counts passed.
    unsafe { ioctl(fd, IOCTL_MODE_GETRESOURCES, &mut res2, "MODE_GETRESOURCES")? };
    let crtc = *crtcs.first().ok_or_else(|| anyhow::anyhow!("no CRTC"))?;
    for &connector in &conns {
        let mut c = GetConnector {
            connector_id: connector,
            ..Default::default()
        };
        // SAFETY: matching struct; counts only.
        unsafe { ioctl(fd, IOCTL_MODE_GETCONNECTOR, &mut c, "MODE_GETCONNECTOR")? };
        if c.count_modes == 0 {
            continue;
        }
        let mut modes = vec![ModeInfo::default(); c.count_modes as usize];
        let mut c2 = GetConnector {
            connector_id: connector,
            modes_ptr: modes.as_mut_ptr() as u64,
            count_modes: c.count_modes,
            ..Default::default()
        };
        // SAFETY: modes holds count_modes entries.
        unsafe { ioctl(fd, IOCTL_MODE_GETCONNECTOR, &mut c2, "MODE_GETCONNECTOR")? };
        modes.truncate(c2.count_modes as usize);
        const PREFERRED: u32 = 1 << 3;
        let mode = modes
            .iter()
            .find(|m| m.type_ & PREFERRED != 0)
            .or(modes.first())
            .copied();
        if let Some(mode) = mode {
            return Ok(Output {
                connector,
                crtc,
                mode,
            });
        }
    }
    bail!("no connector with a mode among {conns:?}")
}

pub fn add_fb(fd: &OwnedFd, dumb: &CreateDumb) -> Result<u32> {
    let mut f = FbCmd {
        width: dumb.width,
        height: dumb.height,
        pitch: dumb.pitch,
        bpp: 32,
        depth: 24,
        handle: dumb.handle,
        ..Default::default()
    };
    // SAFETY: matching struct for the ioctl.
    unsafe { ioctl(fd, IOCTL_MODE_ADDFB, &mut f, "MODE_ADDFB")? };
    Ok(f.fb_id)
}

pub fn set_crtc(fd: &OwnedFd, out: &Output, fb: u32) -> Result<()> {
    let mut conn = out.connector;
    let mut c = Crtc {
        set_connectors_ptr: &mut conn as *mut u32 as u64,
        count_connectors: 1,
        crtc_id: out.crtc,
        fb_id: fb,
        mode_valid: 1,
        mode: out.mode,
        ..Default::default()
    };
    // SAFETY: matching struct; conn outlives the call.
    unsafe { ioctl(fd, IOCTL_MODE_SETCRTC, &mut c, "MODE_SETCRTC") }
}

pub fn rm_fb(fd: &OwnedFd, fb: u32) -> Result<()> {
    let mut id = fb;
    // SAFETY: DRM_IOCTL_MODE_RMFB takes an unsigned int.
    unsafe { ioctl(fd, IOCTL_MODE_RMFB, &mut id, "MODE_RMFB") }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values as the kernel headers compute them on x86-64.
    #[test]
    fn ioctl_numbers_match_the_uapi() {
        assert_eq!(std::mem::size_of::<ModeInfo>(), 68);
        assert_eq!(std::mem::size_of::<Crtc>(), 104);
        assert_eq!(std::mem::size_of::<GetConnector>(), 80);
        assert_eq!(IOCTL_VERSION, 0xc040_6400);
        assert_eq!(IOCTL_MODE_CREATE_DUMB, 0xc020_64b2);
        assert_eq!(IOCTL_MODE_MAP_DUMB, 0xc010_64b3);
        assert_eq!(IOCTL_MODE_DESTROY_DUMB, 0xc004_64b4);
        assert_eq!(IOCTL_MODE_GETRESOURCES, 0xc040_64a0);
        assert_eq!(IOCTL_MODE_SETCRTC, 0xc068_64a2);
        assert_eq!(IOCTL_MODE_GETCONNECTOR, 0xc050_64a7);
        assert_eq!(IOCTL_MODE_ADDFB, 0xc01c_64ae);
        assert_eq!(IOCTL_MODE_RMFB, 0xc004_64af);
    }
}
