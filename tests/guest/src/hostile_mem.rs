//! Hostile memory-table helpers: arbitrary SET_MEM_TABLE / ADD_MEM_REG regions (sizes that do
//! not match their files, huge or many regions) and shrinking the guest's own memory file
//! under the backend.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use vhost::vhost_user::VhostUserFrontend;
use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost::VhostBackend;
pub use vhost::VhostUserMemoryRegionInfo;

use crate::error::GuestError;
use crate::guest::TestGuest;

/// Creates a memfd of `size` bytes (sparse: nothing is allocated until written).
pub fn new_memfd(size: u64) -> Result<File, GuestError> {
    let name = CString::new("vswitch-testguest").map_err(|e| GuestError::Memory(e.to_string()))?;
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create has no other inputs.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(GuestError::Memory(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|e| GuestError::Memory(format!("ftruncate memfd to {size}: {e}")))?;
    Ok(file)
}

/// A region description for [`TestGuest::set_mem_table_raw`] and
/// [`TestGuest::add_mem_region_raw`]: `size` bytes at guest address `gpa`, mapped from `file`
/// at `offset`, claimed to be at `user_addr` in the frontend.
pub fn region(
    gpa: u64,
    size: u64,
    user_addr: u64,
    offset: u64,
    file: &File,
) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: user_addr,
        mmap_offset: offset,
        mmap_handle: file.as_raw_fd(),
    }
}

impl TestGuest {
    /// The memfd behind guest memory.
    pub fn memory_file(&self) -> &File {
        self.mem.file()
    }

    /// The frontend address of guest address 0 (what SET_MEM_TABLE and SET_VRING_ADDR carry).
    pub fn memory_user_addr(&self) -> u64 {
        self.mem.user_addr(0)
    }

    /// Sends SET_MEM_TABLE with `regions` verbatim (NEED_REPLY when REPLY_ACK was negotiated):
    /// `Err` when the backend refuses or closes the connection.
    pub fn set_mem_table_raw(
        &mut self,
        regions: &[VhostUserMemoryRegionInfo],
    ) -> Result<(), GuestError> {
        let ack = self.reply_ack();
        crate::frontend::acked(&mut self.fe, ack, "SET_MEM_TABLE", |fe| {
            fe.set_mem_table(regions).map(|_| ())
        })
    }

    /// Sends ADD_MEM_REG with `region` verbatim (the guest must have negotiated
    /// CONFIGURE_MEM_SLOTS). `Err` when the backend refuses or closes the connection.
    pub fn add_mem_region_raw(
        &mut self,
        region: &VhostUserMemoryRegionInfo,
    ) -> Result<(), GuestError> {
        let ack = self.reply_ack();
        crate::frontend::acked(&mut self.fe, ack, "ADD_MEM_REG", |fe| {
            fe.add_mem_region(region).map(|_| ())
        })
    }

    /// GET_MAX_MEM_SLOTS (the guest must have negotiated CONFIGURE_MEM_SLOTS).
    pub fn max_mem_slots(&mut self) -> Result<u64, GuestError> {
        self.fe
            .get_max_mem_slots()
            .map_err(GuestError::protocol("GET_MAX_MEM_SLOTS"))
    }

    /// Shrinks the memfd behind guest memory to `len` bytes, as a hostile frontend would after
    /// a valid setup. The guest's own memory beyond `len` is then gone too: after this, use
    /// no method that touches guest memory (sending, receiving, posting buffers); drop it.
    pub fn truncate_memory(&self, len: u64) -> Result<(), GuestError> {
        self.mem
            .file()
            .set_len(len)
            .map_err(|e| GuestError::Memory(format!("ftruncate guest memory to {len}: {e}")))
    }

    /// Kicks the TX queue without touching guest memory (works after
    /// [`TestGuest::truncate_memory`]): the backend then reads the TX ring.
    pub fn kick_tx(&mut self) -> Result<(), GuestError> {
        self.tx.q.kick_now()
    }

    pub(crate) fn reply_ack(&self) -> bool {
        self.neg.protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0
    }
}
