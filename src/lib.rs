//! ftpsync: a FUSE mirror filesystem. A directory used at local speed, every change journaled,
//! every closed file hashed (SHA-256), mirrored to an SFTP server.

pub mod audit;
pub mod client;
pub mod cmd;
pub mod config;
pub mod control;
pub mod daemons;
pub mod fs;
pub mod fuse;
pub mod hash;
pub mod journal;
pub mod layout;
pub mod local;
pub mod logfile;
pub mod mirror;
pub mod mounts;
pub mod progress;
pub mod prometheus;
pub mod relpath;
pub mod remote;
pub mod replay;
pub mod report;
pub mod statedir;
pub mod sync;
/// The engine over the mock transport, driven through the fs layer: unit tests only.
#[cfg(test)]
mod testkit;
pub mod utc;
