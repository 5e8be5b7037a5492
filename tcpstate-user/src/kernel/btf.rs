//! Offsets of the kernel structure fields the eBPF programs read, taken from
//! the running kernel's BTF: aya cannot apply CO-RE relocations to programs
//! written in Rust, so the loader resolves them here and passes them on.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, BtfType, Type};
use tcpstate_ebpf::{SockOffsets, SyscallOffsets};

/// The kernel's own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Loads the kernel's BTF, with a clear error when the kernel has none.
pub fn load_vmlinux() -> Result<Btf> {
    if !Path::new(VMLINUX).exists() {
        bail!(
            "kernel BTF not found at {VMLINUX}: tcpstate needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Btf::from_file(VMLINUX).map_err(|e| anyhow!("reading kernel BTF from {VMLINUX}: {e}"))
}

/// Offsets in `struct sock` and `struct net` for [`SockOffsets`].
pub fn sock_offsets(btf: &Btf) -> Result<SockOffsets> {
    let sock = |path: &[&str]| field_offset(btf, "sock", path);
    Ok(SockOffsets {
        protocol: sock(&["sk_protocol"])?,
        family: sock(&["__sk_common", "skc_family"])?,
        num: sock(&["__sk_common", "skc_num"])?,
        dport: sock(&["__sk_common", "skc_dport"])?,
        net: sock(&["__sk_common", "skc_net", "net"])?,
        state: sock(&["__sk_common", "skc_state"])?,
        net_inum: field_offset(btf, "net", &["ns", "inum"])?,
        saddr: sock(&["__sk_common", "skc_rcv_saddr"])?,
        daddr: sock(&["__sk_common", "skc_daddr"])?,
        saddr_v6: sock(&["__sk_common", "skc_v6_rcv_saddr"])?,
        daddr_v6: sock(&["__sk_common", "skc_v6_daddr"])?,
        prot: sock(&["__sk_common", "skc_prot"])?,
        sport: field_offset(btf, "inet_sock", &["inet_sport"])?,
    })
}

/// The BTF offsets of what the syscall programs read: the socket behind a
/// file descriptor and its `SO_REUSEADDR`/`SO_REUSEPORT` bits (the
/// tracepoint offsets are left zero for the loader).
pub fn syscall_offsets(btf: &Btf) -> Result<SyscallOffsets> {
    let reuse = bit_offset(btf, "sock", &["__sk_common", "skc_reuse"])?;
    let reuseport = bit_offset(btf, "sock", &["__sk_common", "skc_reuseport"])?;
    if reuse / 8 != reuseport / 8 || reuse % 8 > 4 {
        bail!("struct sock: skc_reuse and skc_reuseport are not in one byte");
    }
    Ok(SyscallOffsets {
        task_files: field_offset(btf, "task_struct", &["files"])?,
        files_fdt: field_offset(btf, "files_struct", &["fdt"])?,
        fdtable_fd: field_offset(btf, "fdtable", &["fd"])?,
        file_private_data: field_offset(btf, "file", &["private_data"])?,
        socket_sk: field_offset(btf, "socket", &["sk"])?,
        reuse_byte: u16::try_from(reuse / 8).context("struct sock: skc_reuse")?,
        reuse_shift: (reuse % 8) as u8,
        reuseport_shift: (reuseport % 8) as u8,
        ..SyscallOffsets::default()
    })
}

/// Byte offset of `path` (member names, descending into nested structs)
/// inside `struct root`. Anonymous structs and unions are searched through.
pub fn field_offset(btf: &Btf, root: &str, path: &[&str]) -> Result<u16> {
    let what = || format!("struct {root}.{}", path.join("."));
    let bits = bit_offset(btf, root, path)?;
    if !bits.is_multiple_of(8) {
        bail!("{}: not byte aligned", what());
    }
    u16::try_from(bits / 8).with_context(what)
}

/// Bit offset of `path` inside `struct root`, as [`field_offset`] finds it;
/// bitfields included.
fn bit_offset(btf: &Btf, root: &str, path: &[&str]) -> Result<u32> {
    let what = || format!("struct {root}.{}", path.join("."));
    let mut current = find_struct(btf, root).with_context(what)?;
    let mut bits = 0u32;
    for (i, name) in path.iter().enumerate() {
        let (off, type_id) = find_member(btf, &current, name)?
            .ok_or_else(|| anyhow!("no member {name}"))
            .with_context(what)?;
        bits += off;
        if i + 1 < path.len() {
            current = match strip(btf, btf.resolve_type_by_id(type_id)?)? {
                Type::Struct(s) | Type::Union(s) => s,
                _ => bail!("{}: {name} is not a struct", what()),
            };
        }
    }
    Ok(bits)
}

pub(super) fn find_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    btf.resolve_types_by_name(name)
        .map_err(|e| anyhow!("no type {name} in kernel BTF: {e}"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no struct {name} in kernel BTF"))
}

/// Bit offset and type id of member `name`, looking through anonymous members.
fn find_member(btf: &Btf, s: &btf_rs::Struct, name: &str) -> Result<Option<(u32, u32)>> {
    for m in &s.members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let type_id = m.get_type_id().unwrap_or_default();
        if member_name == name {
            return Ok(Some((m.bit_offset(), type_id)));
        }
        if !member_name.is_empty() {
            continue;
        }
        if let Type::Struct(inner) | Type::Union(inner) =
            strip(btf, btf.resolve_type_by_id(type_id)?)?
            && let Some((off, id)) = find_member(btf, &inner, name)?
        {
            return Ok(Some((m.bit_offset() + off, id)));
        }
    }
    Ok(None)
}

/// Follows typedefs and qualifiers to the underlying type.
fn strip(btf: &Btf, mut t: Type) -> Result<Type> {
    loop {
        t = match &t {
            Type::Typedef(x) => btf.resolve_chained_type(x)?,
            Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                btf.resolve_chained_type(x)?
            }
            Type::TypeTag(x) => btf.resolve_chained_type(x)?,
            _ => return Ok(t),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the running kernel's BTF: world-readable, no root needed.
    #[test]
    fn resolves_socket_offsets_on_this_kernel() {
        let btf = load_vmlinux().expect("this test needs the kernel's BTF");
        let o = sock_offsets(&btf).unwrap();
        let common = find_struct(&btf, "sock_common").unwrap();
        let size = common.size() as u16;
        for off in [o.family, o.num, o.dport, o.net, o.state] {
            assert!(
                off < size,
                "{o:?} outside struct sock_common ({size} bytes)"
            );
        }
        // skc_dport and skc_num share skc_portpair: adjacent u16s.
        assert_eq!(o.num.abs_diff(o.dport), 2, "{o:?}");
        assert!(o.net_inum > 0);
    }

    #[test]
    fn resolves_syscall_offsets_on_this_kernel() {
        let btf = load_vmlinux().expect("this test needs the kernel's BTF");
        let o = syscall_offsets(&btf).unwrap();
        let state = sock_offsets(&btf).unwrap().state;
        // The bitfields follow skc_state in struct sock_common.
        assert_eq!(o.reuse_byte, state + 1, "{o:?}");
        assert_ne!(o.reuse_shift, o.reuseport_shift, "{o:?}");
        assert!(
            o.task_files > 0 && o.fdtable_fd > 0 && o.socket_sk > 0,
            "{o:?}"
        );
    }

    #[test]
    fn unknown_fields_are_errors() {
        let btf = load_vmlinux().expect("this test needs the kernel's BTF");
        let err = field_offset(&btf, "sock", &["__sk_common", "no_such_field"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("no member no_such_field"),
            "{err:#}"
        );
    }
}
