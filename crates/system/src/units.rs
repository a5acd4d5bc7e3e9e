//! The two systemd units of the install, rendered from its record: the
//! whole text of each lives here, so what runs as whom, and with which
//! hardening, is read in one place.

use std::path::{Path, PathBuf};

use banger_config::Install;
use banger_config::install::{DAEMON_UNIT, HELPER_UNIT};

/// Where the install writes its units.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The unit files of the install, helper first (the order they start in).
pub fn unit_files() -> [PathBuf; 2] {
    [
        Path::new(UNIT_DIR).join(HELPER_UNIT),
        Path::new(UNIT_DIR).join(DAEMON_UNIT),
    ]
}

const HEADER: &str = "\
# Written by 'sudo banger system install', from /etc/banger/install.toml;
# every install rewrites it: run that again rather than edit this file.
";

/// `bangerd-root.service`: root, with a bounding set of only the
/// capabilities the helper's operations use.
pub fn helper_unit(install: &Install) -> String {
    let bangerd = install.bin_dir().join("bangerd");
    format!(
        "{HEADER}\
[Unit]
Description=banger root helper: bridge, TAP, NAT and isolation rules for {owner}'s bangerd

[Service]
Type=exec
ExecStart={bangerd} --root-helper
Restart=on-failure
# The directory is open; the socket in it answers only {owner} (uid {uid}),
# checked with SO_PEERCRED on every connection.
RuntimeDirectory=banger-root
RuntimeDirectoryMode=0755
# Bridge, TAPs owned by {owner}, nftables rules and the forwarding sysctl
# need CAP_NET_ADMIN; a DNS listener on port 53 needs CAP_NET_BIND_SERVICE;
# writing the id maps of {owner}'s image builds (/proc/PID/uid_map, a file
# of {owner}'s) needs CAP_SETUID, CAP_SETGID and CAP_DAC_OVERRIDE.
# Nothing else, even for root: a bug in the helper gets no more than these.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_DAC_OVERRIDE
AmbientCapabilities=
NoNewPrivileges=yes
# /proc/sys stays writable under ProtectSystem=strict (it guards the file
# hierarchy, not the API file systems), so ip_forward needs no
# ReadWritePaths=; ProtectKernelTunables= would forbid it.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
",
        bangerd = bangerd.display(),
        owner = install.owner,
        uid = install.owner_uid,
    )
}

/// `bangerd.service`: the owner's daemon. `kvm_group` says whether the host
/// has a `kvm` group to open `/dev/kvm` through.
pub fn daemon_unit(install: &Install, kvm_group: bool) -> String {
    let bangerd = install.bin_dir().join("bangerd");
    let kvm = if kvm_group {
        "# /dev/kvm is opened through the kvm group.\nSupplementaryGroups=kvm\n"
    } else {
        ""
    };
    format!(
        "{HEADER}\
[Unit]
Description=banger daemon for {owner}: VMs, images and the API on /run/banger/bangerd.sock
# Every bridge and TAP comes from the helper: without it no VM starts.
Requires={HELPER_UNIT}
After={HELPER_UNIT}

[Service]
Type=exec
User={owner}
Group={gid}
{kvm}ExecStart={bangerd} --system
Restart=on-failure
# Hypervisors are detached and their identity is persisted: VMs outlive a
# restart of the daemon, which re-adopts them.
KillMode=process
StateDirectory=banger
StateDirectoryMode=0700
CacheDirectory=banger
CacheDirectoryMode=0700
RuntimeDirectory=banger
RuntimeDirectoryMode=0700
# VMs' sockets live here and must survive a restart too.
RuntimeDirectoryPreserve=yes
ProtectSystem=strict
# The owner's config and synced files are read, never written.
ProtectHome=read-only
# A /tmp of its own: ProtectSystem=strict would make the host's read-only.
PrivateTmp=yes
# Image builds map their user namespace through the root helper
# (map_ids), not the setuid newuidmap, so this holds for them too.
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
",
        owner = install.owner,
        gid = install.owner_gid,
        bangerd = bangerd.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> Install {
        Install {
            version: "0.1.0".into(),
            owner: "alice".into(),
            owner_uid: 1000,
            owner_gid: 1001,
            owner_home: "/home/alice".into(),
            prefix: "/opt/b".into(),
            installed_at: 1,
        }
    }

    /// The `Key=value` lines of a unit (comments and sections dropped).
    fn settings(unit: &str) -> Vec<&str> {
        unit.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
            .collect()
    }

    #[test]
    fn the_helper_runs_as_root_with_only_network_capabilities() {
        let unit = helper_unit(&install());
        let s = settings(&unit);
        for want in [
            "ExecStart=/opt/b/bin/bangerd --root-helper",
            "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_DAC_OVERRIDE",
            "AmbientCapabilities=",
            "RuntimeDirectory=banger-root",
            "RuntimeDirectoryMode=0755",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "Restart=on-failure",
            "WantedBy=multi-user.target",
        ] {
            assert!(s.contains(&want), "missing {want:?} in\n{unit}");
        }
        assert!(!s.iter().any(|l| l.starts_with("User=")), "root: {unit}");
        assert!(
            !s.iter().any(|l| l.starts_with("ProtectKernelTunables")),
            "ip_forward must stay writable"
        );
    }

    #[test]
    fn the_daemon_runs_as_the_owner_and_its_vms_outlive_it() {
        let unit = daemon_unit(&install(), true);
        let s = settings(&unit);
        for want in [
            "User=alice",
            "Group=1001",
            "SupplementaryGroups=kvm",
            "Requires=bangerd-root.service",
            "After=bangerd-root.service",
            "ExecStart=/opt/b/bin/bangerd --system",
            "KillMode=process",
            "StateDirectory=banger",
            "StateDirectoryMode=0700",
            "CacheDirectory=banger",
            "CacheDirectoryMode=0700",
            "RuntimeDirectory=banger",
            "RuntimeDirectoryMode=0700",
            "RuntimeDirectoryPreserve=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "NoNewPrivileges=yes",
            "Restart=on-failure",
        ] {
            assert!(s.contains(&want), "missing {want:?} in\n{unit}");
        }
        let without = daemon_unit(&install(), false);
        assert!(!without.contains("SupplementaryGroups"), "{without}");
    }

    #[test]
    fn units_are_named_as_the_install_record_says() {
        let [helper, daemon] = unit_files();
        assert_eq!(
            helper,
            Path::new("/etc/systemd/system/bangerd-root.service")
        );
        assert_eq!(daemon, Path::new("/etc/systemd/system/bangerd.service"));
    }
}
