//! vhost-user virtio-net port.
