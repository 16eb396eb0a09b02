//! Error types of this crate.
//!
//! Every fallible operation returns one of four enums, one per concern. Each message says what
//! was wrong (quoting the offending value) and what a valid value looks like, so that a
//! configuration or management-API error can be shown to an operator as it is.

use thiserror::Error;

use crate::mac::MacAddr;
use crate::port::PortId;

/// An invalid channel id (802.1ad S-VID) or channel mode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    /// S-VID 0 is not a channel: in 802.1Q it means "no VLAN" (priority tag only).
    #[error("channel id 0 is not valid: 0 means \"no VLAN\" in 802.1Q; use an S-VID in 1..=4094")]
    Zero,
    /// S-VID 4095 is reserved by 802.1Q.
    #[error("channel id 4095 is reserved by 802.1Q; use an S-VID in 1..=4094")]
    Reserved,
    /// The value does not fit in the 12-bit VID field.
    #[error("channel id {0} is out of range: an S-VID is 12 bits; use a value in 1..=4094")]
    OutOfRange(u64),
    /// The text is not a plain decimal number.
    #[error("channel id {input:?} is not a decimal number; use an S-VID in 1..=4094, e.g. 100")]
    NotANumber {
        /// The text that was given.
        input: String,
    },
    /// The text names no channel mode.
    #[error("channel mode {input:?} is unknown; use \"veb\" or \"vepa\"")]
    UnknownMode {
        /// The text that was given.
        input: String,
    },
}

/// A text that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MacError {
    /// Wrong number of characters, octets or separators.
    #[error(
        "MAC address {input:?} is malformed: expected six two-digit hex octets separated \
         by ':' or '-' (one kind throughout), e.g. 52:54:00:12:34:56"
    )]
    Malformed {
        /// The text that was given.
        input: String,
    },
    /// One octet is not two hexadecimal digits.
    #[error(
        "MAC address {input:?} has a bad octet {octet:?}: each octet is two hex digits \
         (0-9, a-f), e.g. 52:54:00:12:34:56"
    )]
    BadOctet {
        /// The whole text that was given.
        input: String,
        /// The offending octet.
        octet: String,
    },
}

/// A registry update that was refused; the registry is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
    /// The port id is larger than the registry supports.
    #[error(
        "port id {port} is beyond the registry limit: port ids must be in 0..={max}; \
         use a smaller port index"
    )]
    PortOutOfRange {
        /// The port id that was given.
        port: PortId,
        /// The largest port id accepted.
        max: u32,
    },
    /// The port has no channel association to remove.
    #[error(
        "port {port} is not associated with any channel, so there is nothing to \
         disassociate; list the channel table to see the current associations"
    )]
    NotAssociated {
        /// The port that was given.
        port: PortId,
    },
    /// A VM's own MAC must be a unicast address.
    #[error(
        "port {port}: MAC {mac} is a group (multicast/broadcast) address and cannot \
         identify a VM; give the VM's unicast MAC (first octet even), or none"
    )]
    GroupMac {
        /// The port that was given.
        port: PortId,
        /// The offending MAC.
        mac: MacAddr,
    },
}

/// A frame that the tag codec cannot operate on; the buffer is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TagError {
    /// The frame is shorter than the operation needs.
    #[error(
        "frame of {len} bytes is too short: this operation needs at least {min} bytes \
         (destination and source MAC{tag})",
        tag = if *min > 12 { " plus a 4-byte tag" } else { "" }
    )]
    Runt {
        /// The frame length given.
        len: usize,
        /// The minimum length needed.
        min: usize,
    },
    /// The declared frame length is larger than the buffer holding it.
    #[error(
        "frame length {len} exceeds its buffer of {capacity} bytes; pass the number of \
         valid bytes in the buffer"
    )]
    LengthExceedsBuffer {
        /// The frame length given.
        len: usize,
        /// The buffer's size.
        capacity: usize,
    },
    /// Pushing a tag needs 4 spare bytes after the frame.
    #[error(
        "no room to insert a 4-byte tag: the frame is {len} bytes and the buffer {capacity}; \
         give a buffer of at least {needed} bytes"
    )]
    NoRoom {
        /// The frame length given.
        len: usize,
        /// The buffer's size.
        capacity: usize,
        /// The buffer size needed.
        needed: usize,
    },
    /// The outermost tag is not an 802.1ad S-tag.
    #[error(
        "frame is not S-tagged: its outermost EtherType/TPID is {tpid:#06x}, not 802.1ad \
         0x88a8; drop it (it carries no channel) or treat it as untagged"
    )]
    NotSTagged {
        /// The EtherType/TPID found after the MAC addresses.
        tpid: u16,
    },
    /// The outermost tag is not an 802.1Q C-tag.
    #[error(
        "frame is not C-tagged: its outermost EtherType/TPID is {tpid:#06x}, not 802.1Q 0x8100"
    )]
    NotCTagged {
        /// The EtherType/TPID found after the MAC addresses.
        tpid: u16,
    },
    /// The S-tag's VID is not a valid channel.
    #[error("S-tag carries VID {vid}, which is not a channel: {source}")]
    InvalidChannel {
        /// The VID found in the tag.
        vid: u16,
        /// Why it is not a channel.
        #[source]
        source: ChannelError,
    },
    /// A C-tag VID outside 0..=4094.
    #[error("VLAN id {vid} is invalid: an 802.1Q VID must be in 0..=4094 (4095 is reserved)")]
    InvalidVid {
        /// The VID given.
        vid: u16,
    },
    /// A priority code point outside 0..=7.
    #[error("priority code point {pcp} does not fit in 3 bits; use 0..=7")]
    InvalidPcp {
        /// The PCP given.
        pcp: u8,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_input_and_the_remedy() {
        let e = ChannelError::OutOfRange(5000);
        assert!(e.to_string().contains("5000") && e.to_string().contains("1..=4094"));
        let e = MacError::Malformed { input: "zz".into() };
        assert!(e.to_string().contains("\"zz\""));
        let e = RegistryError::PortOutOfRange {
            port: PortId(70000),
            max: 65535,
        };
        assert!(e.to_string().contains("70000") && e.to_string().contains("65535"));
        let e = TagError::Runt { len: 3, min: 16 };
        assert!(e.to_string().contains("plus a 4-byte tag"));
        let e = TagError::Runt { len: 3, min: 12 };
        assert!(!e.to_string().contains("plus"));
        let e = TagError::NotSTagged { tpid: 0x8100 };
        assert!(e.to_string().contains("0x8100"));
    }

    #[test]
    fn invalid_channel_keeps_its_source() {
        use std::error::Error as _;
        let e = TagError::InvalidChannel {
            vid: 0,
            source: ChannelError::Zero,
        };
        assert_eq!(
            e.source().map(|s| s.to_string()),
            Some(ChannelError::Zero.to_string())
        );
    }
}
