//! Guest memory and vring types shared by the port's modules.
//!
//! Dirty-page logging (LOG_SHMFD) is not offered, so guest memory carries no bitmap.

/// The guest's memory as mapped from the frontend's SET_MEM_TABLE file descriptors.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Guest memory that the vhost-user handler swaps atomically when the frontend sends a new
/// memory table; readers take a cheap snapshot (`memory()`) that keeps the old mapping alive.
pub type GuestMemoryAtomic = vm_memory::GuestMemoryAtomic<GuestMemory>;

/// One virtqueue's state behind a mutex: locked once per batch by whoever processes it.
pub type Vring = vhost_user_backend::VringMutex<GuestMemoryAtomic>;
