//! `fs-escape`: tries filesystem operations on caller-supplied paths so the
//! runtime's tests can check that preopened-directory sandboxing holds.

wit_bindgen::generate!({
    world: "fs-escape",
    path: "wit",
});

use std::ffi::{CString, c_char, c_int};
use std::{fs, io};

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn attempt_read(path: String) -> Result<String, String> {
        fs::read_to_string(&path).map_err(|e| e.to_string())
    }

    fn attempt_write(path: String, contents: String) -> Result<(), String> {
        fs::write(&path, contents).map_err(|e| e.to_string())
    }

    fn attempt_symlink(target: String, link: String) -> Result<(), String> {
        symlink(&target, &link).map_err(|e| e.to_string())
    }

    fn attempt_list(path: String) -> Result<Vec<String>, String> {
        let mut names = fs::read_dir(&path)
            .map_err(|e| e.to_string())?
            .map(|entry| {
                entry
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        names.sort();
        Ok(names)
    }
}

/// Creates a symbolic link at `link` pointing to `target`.
///
/// `std::os::wasi::fs::symlink_path` is still unstable, so this calls
/// wasi-libc's `symlink` directly; like `std::fs`, it resolves `link`
/// against the preopened directories.
fn symlink(target: &str, link: &str) -> io::Result<()> {
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let target = CString::new(target)?;
    let link = CString::new(link)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive
    // the call.
    if unsafe { symlink(target.as_ptr(), link.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

export!(Component);
