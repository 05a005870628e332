//! posix-rename@openssh.com: the atomic replace that SFTP v3 rename lacks.
//!
//! The bundled libssh2 implements it (`libssh2_sftp_posix_rename_ex`), but neither ssh2 nor
//! libssh2-sys exposes it, and ssh2 keeps its own SFTP handle private. So this module opens a
//! second SFTP channel of its own on the same session, used for nothing but this call. Every
//! call into libssh2 holds the session lock (`Session::raw()`), exactly as ssh2 does, so the two
//! SFTP channels never race on the shared transport.

use libc::{c_char, c_int, size_t};
use libssh2_sys as raw;
use ssh2::{ErrorCode, Session};

extern "C" {
    fn libssh2_sftp_posix_rename_ex(
        sftp: *mut raw::LIBSSH2_SFTP,
        source_filename: *const c_char,
        source_filename_len: size_t,
        dest_filename: *const c_char,
        dest_filename_len: size_t,
    ) -> c_int;
}

/// A libssh2 SFTP handle owned by us, shut down on drop.
pub struct PosixRename {
    session: Session,
    sftp: *mut raw::LIBSSH2_SFTP,
}

// SAFETY: the raw handle is only touched while holding the session's mutex (`Session::raw()`),
// which is what makes ssh2's own Sftp Send and Sync.
unsafe impl Send for PosixRename {}

impl PosixRename {
    /// Opens the extra SFTP channel.
    pub fn open(session: &Session) -> Result<PosixRename, ssh2::Error> {
        let mut guard = session.raw();
        let sess_ptr: *mut raw::LIBSSH2_SESSION = &mut *guard;
        // SAFETY: a live, handshaken session pointer, used under its lock.
        let sftp = unsafe { raw::libssh2_sftp_init(sess_ptr) };
        if sftp.is_null() {
            // SAFETY: as above; reads the session's last error code.
            let rc = unsafe { raw::libssh2_session_last_errno(sess_ptr) };
            return Err(ssh2::Error::from_session_error_raw(sess_ptr, rc));
        }
        drop(guard);
        Ok(PosixRename {
            session: session.clone(),
            sftp,
        })
    }

    /// Renames `from` to `to` (absolute remote paths), atomically replacing `to` if it exists.
    pub fn rename(&self, from: &[u8], to: &[u8]) -> Result<(), ssh2::Error> {
        let mut guard = self.session.raw();
        let sess_ptr: *mut raw::LIBSSH2_SESSION = &mut *guard;
        // SAFETY: both buffers outlive the call and their lengths are passed; the SFTP handle is
        // live (closed only in Drop) and the session lock is held.
        let rc = unsafe {
            libssh2_sftp_posix_rename_ex(
                self.sftp,
                from.as_ptr().cast(),
                from.len(),
                to.as_ptr().cast(),
                to.len(),
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        if rc == raw::LIBSSH2_ERROR_SFTP_PROTOCOL {
            // SAFETY: live handle, lock held.
            let code = unsafe { raw::libssh2_sftp_last_error(self.sftp) };
            let code = i32::try_from(code).unwrap_or(raw::LIBSSH2_FX_FAILURE);
            return Err(ssh2::Error::from_errno(ErrorCode::SFTP(code)));
        }
        Err(ssh2::Error::from_session_error_raw(sess_ptr, rc))
    }
}

impl Drop for PosixRename {
    fn drop(&mut self) {
        let _guard = self.session.raw();
        // SAFETY: the handle was returned by libssh2_sftp_init and is shut down exactly once;
        // the session (kept alive by our clone) is locked. A failure only leaks the channel of
        // a session that is going away anyway.
        unsafe {
            raw::libssh2_sftp_shutdown(self.sftp);
        }
    }
}
