//! The struct field offsets the eBPF programs need, read from the running
//! kernel's BTF (Rust eBPF has no CO-RE relocations, so the programs get
//! them as a global set before loading).

use std::path::Path;

use btf_rs::{Btf, Type};
use vigil_ebpf_common::Offsets;

use super::error::EbpfError;
use crate::enrich::hierarchies::V1Hierarchy;

/// Where the running kernel describes its types.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Test seam: names one `struct.field` to treat as absent from the BTF, to
/// exercise the failure path on a kernel that has every field.
pub const HIDE_FIELD_ENV: &str = "VIGIL_TEST_HIDE_BTF_FIELD";

/// Reads every offset from the BTF at `path`; a missing struct or field is
/// an error that names it. With `v1`, tasks' cgroups in that v1 hierarchy
/// are read too (when the kernel's BTF knows its controller; else a warning).
pub fn read_offsets(path: &Path, v1: Option<&V1Hierarchy>) -> Result<Offsets, EbpfError> {
    let btf =
        Btf::from_file(path).map_err(|e| EbpfError::ReadBtf { path: path.to_path_buf(), message: e.to_string() })?;
    let hidden = std::env::var(HIDE_FIELD_ENV).ok();
    let lookup = Lookup { btf: &btf, path, hidden: hidden.as_deref() };
    let f = |s: &str, field: &str| lookup.offset(s, field);
    let (css_set_v1_subsys, cgroup_v1_hierarchy) = match v1 {
        None => (0, 0),
        Some(h) => match lookup.subsys_id(&h.controller) {
            Some(ssid) => (f("css_set", "subsys")? + 8 * ssid, h.hierarchy_id),
            None => {
                tracing::warn!(controller = %h.controller, "the kernel's BTF has no such cgroup controller: cgroup v1 ids are not read");
                (0, 0)
            }
        },
    };
    Ok(Offsets {
        task_struct_pid: f("task_struct", "pid")?,
        task_struct_tgid: f("task_struct", "tgid")?,
        task_struct_real_parent: f("task_struct", "real_parent")?,
        task_struct_mm: f("task_struct", "mm")?,
        task_struct_nsproxy: f("task_struct", "nsproxy")?,
        task_struct_real_cred: f("task_struct", "real_cred")?,
        task_struct_start_boottime: f("task_struct", "start_boottime")?,
        task_struct_exit_code: f("task_struct", "exit_code")?,
        mm_struct_arg_start: f("mm_struct", "arg_start")?,
        mm_struct_arg_end: f("mm_struct", "arg_end")?,
        linux_binprm_filename: f("linux_binprm", "filename")?,
        nsproxy_uts_ns: f("nsproxy", "uts_ns")?,
        nsproxy_ipc_ns: f("nsproxy", "ipc_ns")?,
        nsproxy_mnt_ns: f("nsproxy", "mnt_ns")?,
        nsproxy_pid_ns_for_children: f("nsproxy", "pid_ns_for_children")?,
        nsproxy_net_ns: f("nsproxy", "net_ns")?,
        nsproxy_cgroup_ns: f("nsproxy", "cgroup_ns")?,
        uts_namespace_ns: f("uts_namespace", "ns")?,
        ipc_namespace_ns: f("ipc_namespace", "ns")?,
        mnt_namespace_ns: f("mnt_namespace", "ns")?,
        pid_namespace_ns: f("pid_namespace", "ns")?,
        net_ns: f("net", "ns")?,
        cgroup_namespace_ns: f("cgroup_namespace", "ns")?,
        user_namespace_ns: f("user_namespace", "ns")?,
        ns_common_inum: f("ns_common", "inum")?,
        cred_user_ns: f("cred", "user_ns")?,
        cgroup_kn: f("cgroup", "kn")?,
        cgroup_root: f("cgroup", "root")?,
        cgroup_level: f("cgroup", "level")?,
        kernfs_node_id: f("kernfs_node", "id")?,
        cgroup_root_hierarchy_id: f("cgroup_root", "hierarchy_id")?,
        linux_binprm_file: f("linux_binprm", "file")?,
        linux_binprm_interp: f("linux_binprm", "interp")?,
        task_struct_fs: f("task_struct", "fs")?,
        task_struct_signal: f("task_struct", "signal")?,
        // Only with CONFIG_AUDIT: without it, execs carry no login identity.
        task_struct_loginuid: lookup.offset("task_struct", "loginuid").unwrap_or(0),
        task_struct_sessionid: lookup.offset("task_struct", "sessionid").unwrap_or(0),
        fs_struct_root: f("fs_struct", "root")?,
        fs_struct_pwd: f("fs_struct", "pwd")?,
        path_mnt: f("path", "mnt")?,
        path_dentry: f("path", "dentry")?,
        dentry_d_parent: f("dentry", "d_parent")?,
        dentry_d_name: f("dentry", "d_name")?,
        qstr_name: f("qstr", "name")?,
        vfsmount_mnt_root: f("vfsmount", "mnt_root")?,
        mount_mnt: f("mount", "mnt")?,
        mount_mnt_parent: f("mount", "mnt_parent")?,
        mount_mnt_mountpoint: f("mount", "mnt_mountpoint")?,
        file_f_path: f("file", "f_path")?,
        file_f_inode: f("file", "f_inode")?,
        inode_i_mode: f("inode", "i_mode")?,
        inode_i_nlink: f("inode", "i_nlink")?,
        inode_i_ino: f("inode", "i_ino")?,
        inode_i_sb: f("inode", "i_sb")?,
        super_block_s_dev: f("super_block", "s_dev")?,
        super_block_s_magic: f("super_block", "s_magic")?,
        ovl_inode_upperdentry: lookup.ovl_upper_dentry(),
        signal_struct_tty: f("signal_struct", "tty")?,
        tty_struct_index: f("tty_struct", "index")?,
        tty_struct_driver: f("tty_struct", "driver")?,
        tty_driver_major: f("tty_driver", "major")?,
        tty_driver_minor_start: f("tty_driver", "minor_start")?,
        tty_driver_type: f("tty_driver", "type")?,
        task_struct_cgroups: f("task_struct", "cgroups")?,
        css_set_v1_subsys,
        cgroup_subsys_state_cgroup: f("cgroup_subsys_state", "cgroup")?,
        cgroup_v1_hierarchy,
        ready: 1,
    })
}

struct Lookup<'a> {
    btf: &'a Btf,
    path: &'a Path,
    hidden: Option<&'a str>,
}

impl Lookup<'_> {
    /// From an overlayfs inode (`ovl_inode.vfs_inode`) to its upper dentry
    /// (`ovl_inode.__upperdentry`), which is set when the file is on the
    /// upper layer. With overlayfs built as a module its types are not in
    /// vmlinux: then `__upperdentry` is taken to follow `vfs_inode` (as it
    /// has since overlayfs gained `struct ovl_inode`, as Falco assumes);
    /// 0 (not checked) when `struct inode` is unknown too.
    fn ovl_upper_dentry(&self) -> u32 {
        if let (Ok(inode), Ok(upper)) =
            (self.offset("ovl_inode", "vfs_inode"), self.offset("ovl_inode", "__upperdentry"))
        {
            return upper.saturating_sub(inode);
        }
        self.strukt("inode").map(|s| s.size() as u32).unwrap_or(0)
    }

    /// The index of `controller` in `css_set.subsys` (the kernel's
    /// `enum cgroup_subsys_id`: `<controller>_cgrp_id`).
    fn subsys_id(&self, controller: &str) -> Option<u32> {
        let want = format!("{controller}_cgrp_id");
        let types = self.btf.resolve_types_by_name("cgroup_subsys_id").unwrap_or_default();
        types.into_iter().find_map(|t| match t {
            Type::Enum(e) => {
                e.members.iter().find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == want)).map(|m| m.val())
            }
            _ => None,
        })
    }

    fn strukt(&self, name: &str) -> Option<btf_rs::Struct> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        types.into_iter().find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
    }

    fn offset(&self, strukt: &str, field: &str) -> Result<u32, EbpfError> {
        let missing = |what: String| EbpfError::BtfLacks { path: self.path.to_path_buf(), what };
        if self.hidden == Some(&format!("{strukt}.{field}")) {
            return Err(missing(format!("`struct {strukt}`.`{field}` (hidden by {HIDE_FIELD_ENV})")));
        }
        let Some(s) = self.strukt(strukt) else {
            return Err(missing(format!("`struct {strukt}`")));
        };
        self.find(&s, field).ok_or_else(|| missing(format!("`struct {strukt}`.`{field}`")))
    }

    /// The byte offset of `field` in `s`, looking into anonymous struct and
    /// union members (the kernel wraps fields in them, e.g. in mm_struct).
    fn find(&self, s: &btf_rs::Struct, field: &str) -> Option<u32> {
        for member in &s.members {
            let name = self.btf.resolve_name(member).unwrap_or_default();
            let at = member.bit_offset() / 8;
            if name == field {
                return Some(at);
            }
            if name.is_empty() {
                let inner = match self.btf.resolve_chained_type(member).ok()? {
                    Type::Struct(s) | Type::Union(s) => s,
                    _ => continue,
                };
                if let Some(off) = self.find(&inner, field) {
                    return Some(at + off);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_running_kernels_offsets() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: this kernel has no {VMLINUX_BTF}");
            return;
        }
        let o = read_offsets(Path::new(VMLINUX_BTF), None).unwrap();
        assert_eq!(o.ready, 1);
        // Fields that are never first in their struct.
        assert!(o.task_struct_pid > 0 && o.task_struct_tgid > o.task_struct_pid);
        assert!(o.mm_struct_arg_end > o.mm_struct_arg_start, "{o:?}");
        assert!(o.nsproxy_uts_ns > 0);
        assert!(o.fs_struct_pwd > o.fs_struct_root && o.dentry_d_parent > 0 && o.qstr_name > 0, "{o:?}");
        assert!(o.ovl_inode_upperdentry > 0, "{o:?}");
        assert_eq!(o.cgroup_v1_hierarchy, 0);
    }

    #[test]
    fn finds_a_v1_controllers_slot() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: this kernel has no {VMLINUX_BTF}");
            return;
        }
        let h = |controller: &str| V1Hierarchy { controller: controller.into(), hierarchy_id: 9, mount: None };
        let cpuset = read_offsets(Path::new(VMLINUX_BTF), Some(&h("cpuset"))).unwrap();
        let memory = read_offsets(Path::new(VMLINUX_BTF), Some(&h("memory"))).unwrap();
        // cpuset is the kernel's first controller; memory comes later.
        assert_eq!(cpuset.cgroup_v1_hierarchy, 9);
        assert!(memory.css_set_v1_subsys > cpuset.css_set_v1_subsys, "{memory:?}");
        assert_eq!((memory.css_set_v1_subsys - cpuset.css_set_v1_subsys) % 8, 0);
        let none = read_offsets(Path::new(VMLINUX_BTF), Some(&h("no-such"))).unwrap();
        assert_eq!(none.cgroup_v1_hierarchy, 0, "unknown controller: off");
    }
}
