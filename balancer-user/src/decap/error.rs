//! Why `balancer decap` did not do what it was asked.

use std::path::PathBuf;

use crate::lifecycle::iface::IfaceError;

/// A refusal (bad input, or an interface that is not free) or a fault of the host.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    /// The interface name is bad or names no interface.
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// More `--allow` prefixes of one family than the program holds.
    #[error("too many --allow prefixes: at most {max} IPv4 and {max} IPv6 ones")]
    TooManyPrefixes {
        /// The limit per family.
        max: u32,
    },
    /// Another XDP program is attached to the interface.
    #[error(
        "{iface} already has an XDP program that balancer decap did not attach (the \
         balancer daemon's, or another: `ip link show {iface}`, `bpftool net`)"
    )]
    Busy {
        /// The interface.
        iface: String,
    },
    /// `--remove` or `--status` on an interface without a decapsulator.
    #[error("balancer decap is not attached to {iface} (nothing pinned at {})", dir.display())]
    NotAttached {
        /// The interface.
        iface: String,
        /// Where its pins would be.
        dir: PathBuf,
    },
    /// The pin directory is not on a bpffs (and could not be mounted).
    #[error("cannot use {} for pins (is bpffs mounted? `mount -t bpf bpf /sys/fs/bpf`)", dir.display())]
    Bpffs {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Loading the object or the program failed.
    #[error("load the decapsulator")]
    Load(#[from] aya::EbpfError),
    /// The kernel refused a program operation.
    #[error("{context}")]
    Program {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The kernel refused a map operation.
    #[error("{context}")]
    Map {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: aya::maps::MapError,
    },
    /// A filesystem or system call failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DecapError {
    /// Whether the host failed (as opposed to the command not fitting it).
    pub fn is_host_fault(&self) -> bool {
        !matches!(
            self,
            Self::Iface(_)
                | Self::TooManyPrefixes { .. }
                | Self::Busy { .. }
                | Self::NotAttached { .. }
        )
    }
}
