//! Loading the kernel modules the initramfs carries, in the order the
//! host resolved (crates/images/src/initramfs: `banger/modules.order`
//! lists file names in `banger/modules/`, dependencies first).

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

use crate::failure::{Context, Failure};

pub const MODULES_DIR: &str = "/banger/modules";
pub const MODULES_ORDER: &str = "/banger/modules.order";

/// The module file names of an order file, in order.
pub fn parse_order(text: &str) -> Result<Vec<&str>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|name| {
            if name.ends_with(".ko") && !name.contains('/') {
                Ok(name)
            } else {
                Err(format!("{name:?} is not a module file name"))
            }
        })
        .collect()
}

/// Loads every module of the order file; returns how many it loaded.
pub fn load_all() -> Result<usize, Failure> {
    let text = match std::fs::read_to_string(MODULES_ORDER) {
        Ok(text) => text,
        // An initramfs for a kernel with everything built in has none.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Failure::new(format!("reading {MODULES_ORDER}"), e)),
    };
    let names = parse_order(&text).context(|| format!("reading {MODULES_ORDER}"))?;
    for name in &names {
        load(&Path::new(MODULES_DIR).join(name))?;
    }
    Ok(names.len())
}

fn load(path: &Path) -> Result<(), Failure> {
    let what = || format!("loading module {}", path.display());
    let file = File::open(path).context(what)?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        // Already loaded (or built in): what we wanted.
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(Errno::ENOEXEC) => Err(Failure::new(
            what(),
            "not a module for this kernel (initramfs built for another kernel?)",
        )),
        Err(e) => Err(Failure::new(what(), e.desc())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_files_list_module_names() {
        assert_eq!(
            parse_order("virtio.ko\n\n# note\nvirtio_blk.ko\n").unwrap(),
            ["virtio.ko", "virtio_blk.ko"]
        );
        assert!(
            parse_order("../etc/passwd\n")
                .unwrap_err()
                .contains("not a module")
        );
        assert!(parse_order("virtio\n").is_err());
    }
}
