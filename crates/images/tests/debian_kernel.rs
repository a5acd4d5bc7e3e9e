//! Extraction on a real Debian cloud kernel (LZ4-compressed bzImage).

use std::time::Instant;

use banger_images::kernel::{self, Compression, KernelError};

#[test]
fn extracts_the_debian_cloud_kernel() {
    let Some(pkg) = banger_testkit::debian_kernel() else {
        return;
    };
    let bzimage = std::fs::read(pkg.bzimage()).expect("read the fetched bzImage");
    let started = Instant::now();
    let vmlinux = kernel::extract_vmlinux(&bzimage).expect("extract vmlinux");
    println!(
        "{}: {} -> {} bytes of ELF in {:?}",
        pkg.package,
        bzimage.len(),
        vmlinux.elf.len(),
        started.elapsed()
    );
    assert_eq!(vmlinux.compression, Compression::Lz4);
    assert_eq!(&vmlinux.elf[..4], b"\x7fELF");
    assert!(
        vmlinux.elf.len() > bzimage.len(),
        "ELF smaller than its compressed form"
    );
    // The PVH entry is a low physical address inside the kernel's load area.
    assert!(
        (0x100_0000..0x1_0000_0000).contains(&vmlinux.pvh_entry),
        "odd PVH entry {:#x}",
        vmlinux.pvh_entry
    );
    // The result checks out on its own, as a registered vmlinux would.
    let facts = kernel::inspect_vmlinux(&vmlinux.elf).expect("inspect");
    assert_eq!(facts.extent, vmlinux.elf.len());
}

#[test]
fn a_truncated_debian_kernel_is_refused_clearly() {
    let Some(pkg) = banger_testkit::debian_kernel() else {
        return;
    };
    let bzimage = std::fs::read(pkg.bzimage()).expect("read the fetched bzImage");
    let payload = kernel::locate_payload(&bzimage).expect("payload");

    // Cut inside the payload: the header points past the end of the file.
    let cut = &bzimage[..payload.offset + payload.length / 2];
    let err = kernel::extract_vmlinux(cut).unwrap_err();
    assert!(matches!(err, KernelError::Truncated(_)), "{err}");

    // Damage the middle of the LZ4 stream: decompression fails, naming lz4.
    let mut damaged = bzimage.clone();
    let middle = payload.offset + payload.length / 2;
    damaged[middle..middle + 4096].fill(0xff);
    let err = kernel::extract_vmlinux(&damaged).unwrap_err().to_string();
    assert!(err.contains("lz4"), "{err}");

    // Only the setup code: no payload at all.
    let err = kernel::extract_vmlinux(&bzimage[..1024])
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn resolves_the_guest_modules_of_the_debian_kernel() {
    use banger_images::initramfs::{GUEST_MODULES, ModuleIndex};
    let Some(pkg) = banger_testkit::debian_kernel() else {
        return;
    };
    let index = ModuleIndex::open(&pkg.modules_dir()).expect("index modules");
    let order = index.resolve(GUEST_MODULES).expect("resolve");
    let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
    println!("load order: {}", names.join(" "));
    let pos = |n: &str| {
        names
            .iter()
            .position(|m| *m == n)
            .unwrap_or_else(|| panic!("{n} not in {names:?}"))
    };
    // ext4 is built into Debian's cloud kernel: no file for it.
    assert!(!names.contains(&"ext4"));
    for (module, dep) in [
        ("virtio_blk", "virtio"),
        ("virtio_blk", "virtio_ring"),
        ("virtio_mmio", "virtio"),
        ("virtio_pci", "virtio_pci_modern_dev"),
        ("virtio_net", "net_failover"),
        (
            "vmw_vsock_virtio_transport",
            "vmw_vsock_virtio_transport_common",
        ),
        ("vmw_vsock_virtio_transport_common", "vsock"),
    ] {
        assert!(pos(dep) < pos(module), "{dep} must load before {module}");
    }
    pos("overlay");
    pos("virtio_console");
}
