//! Checks of the frontend's memory-table messages, made by the relay ([`crate::shim`]) before
//! the daemon maps anything.
//!
//! vm-memory maps whatever a region claims: a region larger than its file maps pages that raise
//! SIGBUS when touched, and a frontend may add regions until the process's address space is
//! full. So, for SET_MEM_TABLE and ADD_MEM_REG, each region's file must be a regular file
//! (memfd, /dev/shm, hugetlbfs) that holds the whole region (`mmap_offset + memory_size <=
//! st_size`, overflow-checked), and the frontend's regions must stay within the port's limits
//! on their number and total size. REM_MEM_REG releases a region's share of the limits. A
//! refused message is counted, logged once, and ends the connection (see the relay).
//!
//! With several queue pairs, QEMU 7.2 sends ADD_MEM_REG for every region once per queue pair
//! (each pair is a vhost device of its own): an ADD_MEM_REG of a region identical to one
//! already mapped is a *repeat*, acknowledged by the relay without mapping anything again,
//! and the matching REM_MEM_REG removes a repeat first ([`MemTableGuard::repeat`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use log::warn;
use vhost::vhost_user::message::FrontendReq;

use crate::stats::PortStats;

/// guest_phys_addr, memory_size, userspace_addr, mmap_offset.
const REGION_LEN: usize = 32;
/// SET_MEM_TABLE's header: num_regions and padding.
const TABLE_HDR_LEN: usize = 8;
/// ADD_MEM_REG and REM_MEM_REG: padding before the region.
const SINGLE_PAD_LEN: usize = 8;
/// Regions one SET_MEM_TABLE may carry (the protocol's fd limit).
const MAX_TABLE_REGIONS: usize = 8;

/// Limits on one frontend's guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemLimits {
    /// Most memory regions mapped at once.
    pub max_regions: u32,
    /// Most bytes mapped at once (sum of the regions' sizes).
    pub max_bytes: u64,
}

/// The region count vhost-user-backend advertises in GET_MAX_MEM_SLOTS, and so the highest
/// [`MemLimits::max_regions`].
pub const MAX_MEM_REGIONS: u32 = 509;
/// The smallest [`MemLimits::max_bytes`] accepted.
pub const MIN_MEM_BYTES: u64 = 1 << 20;
/// The largest [`MemLimits::max_bytes`] accepted (the x86-64 user address space).
pub const MAX_MEM_BYTES: u64 = 1 << 47;

impl Default for MemLimits {
    /// 64 regions (QEMU sends one or two for its RAM plus one per hotplugged DIMM; DPDK's vhost
    /// library handles at most 8) and 1 TiB mapped.
    fn default() -> Self {
        MemLimits {
            max_regions: 64,
            max_bytes: 1 << 40,
        }
    }
}

impl MemLimits {
    /// True when both limits are in range.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_MEM_REGIONS).contains(&self.max_regions)
            && (MIN_MEM_BYTES..=MAX_MEM_BYTES).contains(&self.max_bytes)
    }
}

/// Why a memory-table message was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MemRefused {
    /// The payload does not describe the regions it should, or fds are missing.
    #[error("malformed {0} message (payload or file descriptors do not match the regions)")]
    Malformed(&'static str),
    /// Empty region.
    #[error("region at guest address {gpa:#x} has size 0")]
    Empty { gpa: u64 },
    /// fstat failed or the file is not a regular file.
    #[error(
        "region at guest address {gpa:#x}: its file is not a regular file (memfd, /dev/shm or \
         hugetlbfs file expected)"
    )]
    NotRegular { gpa: u64 },
    /// The region extends beyond its file.
    #[error(
        "region at guest address {gpa:#x} maps {size:#x} bytes at offset {offset:#x} of a file of \
         {file_size:#x} bytes: it must lie inside its file"
    )]
    BeyondFile {
        gpa: u64,
        size: u64,
        offset: u64,
        file_size: u64,
    },
    /// Too many regions.
    #[error("{count} memory regions exceed the port's limit of {max} (max_mem_regions)")]
    TooManyRegions { count: usize, max: u32 },
    /// Too many bytes.
    #[error(
        "{bytes:#x} bytes of guest memory exceed the port's limit of {max:#x} (max_mem_bytes)"
    )]
    TooLarge { bytes: u128, max: u64 },
}

/// One region as the frontend described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    gpa: u64,
    size: u64,
    user: u64,
    offset: u64,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let mut v = [0u8; 8];
    v.copy_from_slice(b.get(at..at + 8)?);
    Some(u64::from_le_bytes(v))
}

fn region_at(b: &[u8], at: usize) -> Option<Region> {
    Some(Region {
        gpa: u64_at(b, at)?,
        size: u64_at(b, at + 8)?,
        user: u64_at(b, at + 16)?,
        offset: u64_at(b, at + 24)?,
    })
}

/// The regions a frontend has mapped (as far as the daemon accepted them), against the port's
/// limits. One per connection.
pub(crate) struct MemTableGuard {
    limits: MemLimits,
    regions: Vec<Region>,
    /// Repeated ADD_MEM_REGs not passed on (see the module doc); at most `max_regions`.
    repeats: Vec<Region>,
    name: String,
    stats: Arc<PortStats>,
}

impl MemTableGuard {
    pub(crate) fn new(limits: MemLimits, name: String, stats: Arc<PortStats>) -> Self {
        MemTableGuard {
            limits,
            regions: Vec::new(),
            repeats: Vec::new(),
            name,
            stats,
        }
    }

    /// True when the message is an ADD_MEM_REG of a region already mapped (identical address,
    /// size, frontend address and offset), or the REM_MEM_REG of such a repeat: the relay
    /// acknowledges it itself, nothing is mapped or unmapped. Repeats are bounded by the
    /// region limit; one more is passed on (and the daemon refuses the overlap).
    pub(crate) fn repeat(&mut self, request: u32, payload: &[u8]) -> bool {
        let add = match FrontendReq::try_from(request) {
            Ok(FrontendReq::ADD_MEM_REG) => true,
            Ok(FrontendReq::REM_MEM_REG) => false,
            _ => return false,
        };
        if payload.len() != SINGLE_PAD_LEN + REGION_LEN {
            return false;
        }
        let Some(r) = region_at(payload, SINGLE_PAD_LEN) else {
            return false;
        };
        if add {
            let room = self.repeats.len() < self.limits.max_regions as usize;
            if room && self.regions.contains(&r) {
                self.repeats.push(r);
                return true;
            }
            return false;
        }
        match self
            .repeats
            .iter()
            .position(|t| t.gpa == r.gpa && t.size == r.size)
        {
            Some(i) => {
                self.repeats.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Checks one frontend message (request code, payload, attached fds) before the daemon
    /// sees it. A refusal is counted and logged here; the caller ends the connection.
    pub(crate) fn check(
        &mut self,
        request: u32,
        payload: &[u8],
        fds: &[OwnedFd],
    ) -> Result<(), MemRefused> {
        let r = match FrontendReq::try_from(request) {
            Ok(FrontendReq::SET_MEM_TABLE) => self.set_mem_table(payload, fds),
            Ok(FrontendReq::ADD_MEM_REG) => self.add_mem_reg(payload, fds),
            Ok(FrontendReq::REM_MEM_REG) => {
                self.rem_mem_reg(payload);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = &r {
            PortStats::add(&self.stats.mem_refused, 1);
            warn!(
                "{}: guest memory refused: {e}; ending the connection",
                self.name
            );
        }
        r
    }

    /// Lowers the daemon's GET_MAX_MEM_SLOTS answer to the port's region limit, so that a
    /// frontend that honours it (QEMU does) never hits the limit.
    pub(crate) fn adjust_reply(&self, request: u32, payload: &mut [u8]) {
        if !matches!(
            FrontendReq::try_from(request),
            Ok(FrontendReq::GET_MAX_MEM_SLOTS)
        ) {
            return;
        }
        if let Some(v) = u64_at(payload, 0) {
            let v = v.min(u64::from(self.limits.max_regions));
            payload[..8].copy_from_slice(&v.to_le_bytes());
        }
    }

    fn set_mem_table(&mut self, payload: &[u8], fds: &[OwnedFd]) -> Result<(), MemRefused> {
        let bad = MemRefused::Malformed("SET_MEM_TABLE");
        let n = payload
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or(bad.clone())?;
        if n == 0
            || n > MAX_TABLE_REGIONS
            || fds.len() != n
            || payload.len() != TABLE_HDR_LEN + n * REGION_LEN
        {
            return Err(bad);
        }
        let mut regions = Vec::with_capacity(n);
        for (i, fd) in fds.iter().enumerate() {
            let r = region_at(payload, TABLE_HDR_LEN + i * REGION_LEN).ok_or(bad.clone())?;
            fits_file(&r, fd)?;
            regions.push(r);
        }
        self.within_limits(&regions)?;
        self.regions = regions;
        self.repeats.clear();
        Ok(())
    }

    fn add_mem_reg(&mut self, payload: &[u8], fds: &[OwnedFd]) -> Result<(), MemRefused> {
        let bad = MemRefused::Malformed("ADD_MEM_REG");
        let [fd] = fds else { return Err(bad) };
        if payload.len() != SINGLE_PAD_LEN + REGION_LEN {
            return Err(bad);
        }
        let r = region_at(payload, SINGLE_PAD_LEN).ok_or(bad)?;
        fits_file(&r, fd)?;
        let mut next = self.regions.clone();
        next.push(r);
        self.within_limits(&next)?;
        self.regions = next;
        Ok(())
    }

    fn rem_mem_reg(&mut self, payload: &[u8]) {
        // The daemon removes the region with this start and size, or refuses (and ends the
        // connection) when there is none.
        if let Some(r) = region_at(payload, SINGLE_PAD_LEN) {
            if let Some(i) = self
                .regions
                .iter()
                .position(|t| t.gpa == r.gpa && t.size == r.size)
            {
                self.regions.swap_remove(i);
            }
        }
    }

    fn within_limits(&self, regions: &[Region]) -> Result<(), MemRefused> {
        if regions.len() > self.limits.max_regions as usize {
            return Err(MemRefused::TooManyRegions {
                count: regions.len(),
                max: self.limits.max_regions,
            });
        }
        let bytes: u128 = regions.iter().map(|r| u128::from(r.size)).sum();
        if bytes > u128::from(self.limits.max_bytes) {
            return Err(MemRefused::TooLarge {
                bytes,
                max: self.limits.max_bytes,
            });
        }
        Ok(())
    }
}

/// The region is not empty and lies inside its regular file.
fn fits_file(r: &Region, fd: &OwnedFd) -> Result<(), MemRefused> {
    if r.size == 0 {
        return Err(MemRefused::Empty { gpa: r.gpa });
    }
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor we own; `st` is a valid, writable stat buffer.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(MemRefused::NotRegular { gpa: r.gpa });
    }
    let file_size = u64::try_from(st.st_size).unwrap_or(0);
    let beyond = MemRefused::BeyondFile {
        gpa: r.gpa,
        size: r.size,
        offset: r.offset,
        file_size,
    };
    match r.offset.checked_add(r.size) {
        Some(end) if end <= file_size => Ok(()),
        _ => Err(beyond),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn memfd(size: u64) -> OwnedFd {
        // SAFETY: a valid NUL-terminated name; memfd_create has no other inputs.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` was just created and is owned by nobody else.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.set_len(size).expect("ftruncate");
        f.into()
    }

    fn region(gpa: u64, size: u64, offset: u64) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [gpa, size, 0x7000_0000, offset] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    fn table(regions: &[Vec<u8>]) -> Vec<u8> {
        let mut v = (regions.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 4]);
        for r in regions {
            v.extend_from_slice(r);
        }
        v
    }

    fn single(r: Vec<u8>) -> Vec<u8> {
        let mut v = vec![0u8; 8];
        v.extend_from_slice(&r);
        v
    }

    fn guard(max_regions: u32, max_bytes: u64) -> MemTableGuard {
        let limits = MemLimits {
            max_regions,
            max_bytes,
        };
        MemTableGuard::new(limits, "t".into(), Arc::new(PortStats::default()))
    }

    #[test]
    fn regions_must_lie_inside_their_file() {
        let mut g = guard(8, 1 << 40);
        let fd = [memfd(64 << 10)];
        let ok = table(&[region(0, 64 << 10, 0)]);
        assert_eq!(g.check(5, &ok, &fd), Ok(()));
        let big = table(&[region(0, 4 << 20, 0)]);
        assert!(matches!(
            g.check(5, &big, &fd),
            Err(MemRefused::BeyondFile { .. })
        ));
        let shifted = table(&[region(0, 64 << 10, 4096)]);
        assert!(g.check(5, &shifted, &fd).is_err());
        let wraps = table(&[region(0, 4096, u64::MAX - 100)]);
        assert!(g.check(5, &wraps, &fd).is_err());
        let empty = table(&[region(0, 0, 0)]);
        assert_eq!(g.check(5, &empty, &fd), Err(MemRefused::Empty { gpa: 0 }));
        assert_eq!(
            g.stats
                .mem_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            4
        );
    }

    #[test]
    fn fds_must_match_regions() {
        let mut g = guard(8, 1 << 40);
        let t = table(&[region(0, 4096, 0), region(0x10000, 4096, 0)]);
        assert!(g.check(5, &t, &[memfd(4096)]).is_err());
        assert!(g.check(37, &single(region(0, 4096, 0)), &[]).is_err());
        assert!(g.check(5, &t[..20], &[memfd(4096), memfd(4096)]).is_err());
    }

    #[test]
    fn count_and_size_limits_follow_adds_and_removes() {
        let mut g = guard(2, 1 << 30);
        let fd = [memfd(1 << 20)];
        assert!(g.check(37, &single(region(0, 1 << 20, 0)), &fd).is_ok());
        assert!(g
            .check(37, &single(region(1 << 20, 1 << 20, 0)), &fd)
            .is_ok());
        assert!(matches!(
            g.check(37, &single(region(2 << 20, 1 << 20, 0)), &fd),
            Err(MemRefused::TooManyRegions { count: 3, max: 2 })
        ));
        g.check(38, &single(region(0, 1 << 20, 0)), &[])
            .expect("remove");
        assert!(g
            .check(37, &single(region(2 << 20, 1 << 20, 0)), &fd)
            .is_ok());
        // A sparse 32 TiB file passes the fit check but not the size limit.
        let huge = [memfd(32 << 40)];
        assert!(matches!(
            g.check(5, &table(&[region(0, 32 << 40, 0)]), &huge),
            Err(MemRefused::TooLarge { .. })
        ));
    }

    #[test]
    fn a_region_added_again_for_another_queue_pair_is_a_bounded_repeat() {
        let mut g = guard(2, 1 << 30);
        let fd = [memfd(1 << 20)];
        let r = single(region(0, 1 << 20, 0));
        assert!(!g.repeat(37, &r), "first add: passed on");
        assert!(g.check(37, &r, &fd).is_ok());
        assert!(g.repeat(37, &r), "same region again: a repeat");
        assert!(g.repeat(37, &r));
        assert!(!g.repeat(37, &r), "repeats are bounded by the region limit");
        // Another region, or the same address with another offset, is no repeat.
        assert!(!g.repeat(37, &single(region(0, 1 << 20, 4096))));
        assert!(!g.repeat(37, &single(region(1 << 20, 1 << 20, 0))));
        // Removals take the repeats first, then reach the daemon.
        assert!(g.repeat(38, &r));
        assert!(g.repeat(38, &r));
        assert!(!g.repeat(38, &r));
        assert!(!g.repeat(38, &r[..20]), "malformed: never a repeat");
    }

    #[test]
    fn max_mem_slots_reply_is_lowered_to_the_limit() {
        let g = guard(16, 1 << 30);
        let mut p = 509u64.to_le_bytes();
        g.adjust_reply(36, &mut p);
        assert_eq!(u64::from_le_bytes(p), 16);
        let mut p = 8u64.to_le_bytes();
        g.adjust_reply(36, &mut p);
        assert_eq!(u64::from_le_bytes(p), 8);
    }
}
