//! Errors of the data-plane layer.

/// What went wrong while loading, attaching or writing the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The object lacks a map the daemon needs (build mismatch).
    #[error("the XDP object has no map named {0}")]
    MissingMap(String),
    /// A map operation failed.
    #[error("{context}")]
    Map {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Loading or attaching the program failed.
    #[error("{context}")]
    Program {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Parsing or creating the object failed.
    #[error("load the XDP object")]
    Load(#[from] aya::EbpfError),
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
