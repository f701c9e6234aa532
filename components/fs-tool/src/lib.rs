//! `fs-tool`: basic file access (read, write, list) through `std::fs`, which
//! on WASI only reaches the directories the host preopens.

wit_bindgen::generate!({
    world: "fs-tool",
    path: "wit",
    // By default wit-bindgen names the core export of a world-level function
    // after the function itself, so `read` and `write` would replace
    // wasi-libc's `read`/`write` symbols, which std calls for all file and
    // stdio I/O. Standard (`cm32p2`) export names avoid the clash; see
    // `post_return_aliases!` below for the matching post-return names.
    export_prefix: "cm32p2||",
});

use std::fs;

/// Exports each function's post-return under the standard name
/// `cm32p2||{name}_post`, forwarding to the one wit-bindgen generates.
///
/// With an export prefix wit-bindgen still builds post-return names in the
/// legacy style (`{prefix}cabi_post_{name}`), which wit-component does not
/// recognise under the `cm32p2` scheme; without these aliases the memory of
/// returned strings and lists would never be freed.
macro_rules! post_return_aliases {
    ($($name:literal => $alias:ident, $generated:ident;)*) => {
        unsafe extern "C" {
            $(
                #[link_name = concat!("cm32p2||cabi_post_", $name)]
                fn $generated(ret: *mut u8);
            )*
        }
        $(
            #[unsafe(export_name = concat!("cm32p2||", $name, "_post"))]
            unsafe extern "C" fn $alias(ret: *mut u8) {
                // SAFETY: called by the host exactly once after the export
                // returned, with the return area that export produced.
                unsafe { $generated(ret) }
            }
        )*
    };
}

post_return_aliases! {
    "read" => read_post, generated_read_post;
    "write" => write_post, generated_write_post;
    "list" => list_post, generated_list_post;
}

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn read(path: String) -> Result<String, String> {
        fs::read_to_string(&path).map_err(|e| e.to_string())
    }

    fn write(path: String, contents: String) -> Result<(), String> {
        fs::write(&path, contents).map_err(|e| e.to_string())
    }

    fn list(path: String) -> Result<Vec<String>, String> {
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

export!(Component);
