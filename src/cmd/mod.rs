//! The commands wing: one file per command the CLI runs (`mount` is the daemon's start and
//! drain). Siblings only: a command never imports another command, and nothing in the core
//! imports a command; what two commands share lives below them (`client` for a mount's
//! daemon and journal, `remote` for connections, `report` for the status document).

pub mod audit;
pub mod mount;
pub mod mount_helper;
pub mod restore;
pub mod status;
pub mod trust;
pub mod unmount;
pub mod verify;
