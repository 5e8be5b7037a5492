//! Where the rescue programs find `bpf_prog_active`, the kernel's per-CPU
//! guard (see [`GuardOffsets`]): from the kernel's BTF when it describes
//! the per-CPU section (and `tcp_prot` points into it, Linux 6.0+), else
//! from the symbol table in `/proc/kallsyms` when the kernel lists its data
//! symbols there (`CONFIG_KALLSYMS_ALL`).

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use tcpstate_ebpf::GuardOffsets;

use super::btf::field_offset;

const KALLSYMS: &str = "/proc/kallsyms";
const GUARD: &str = "bpf_prog_active";

/// The guard's whereabouts on this kernel, or why it cannot be found.
pub fn offsets(btf: &Btf) -> Result<GuardOffsets> {
    let array_pptrs = field_offset(btf, "bpf_array", &["pptrs"])?;
    let not_in_btf = match derived(btf) {
        Ok(g) => return Ok(GuardOffsets { array_pptrs, ..g }),
        Err(e) => e,
    };
    let prog_active = std::fs::read_to_string(KALLSYMS)
        .with_context(|| format!("reading {KALLSYMS}"))
        .and_then(|text| data_symbol(&text, GUARD))
        .map_err(|not_listed| anyhow!("{not_in_btf:#}; {not_listed:#}"))?;
    Ok(GuardOffsets {
        array_pptrs,
        prog_active,
        ..Default::default()
    })
}

/// The guard's distance from `tcp_memory_per_cpu_fw_alloc`, whose address
/// `tcp_prot` holds, from the `.data..percpu` section of the kernel's BTF.
fn derived(btf: &Btf) -> Result<GuardOffsets> {
    let prog_active = percpu_offset(btf, GUARD)?;
    let fw_alloc = percpu_offset(btf, "tcp_memory_per_cpu_fw_alloc")?;
    Ok(GuardOffsets {
        proto_fw_alloc: field_offset(btf, "proto", &["per_cpu_fw_alloc"])?,
        prog_active_delta: i64::from(prog_active) - i64::from(fw_alloc),
        ..Default::default()
    })
}

/// Offset of static per-CPU variable `name` in the kernel's `.data..percpu`.
fn percpu_offset(btf: &Btf, name: &str) -> Result<u32> {
    const SECTION: &str = ".data..percpu";
    let section = btf
        .resolve_types_by_name(SECTION)
        .map_err(|e| anyhow!("no {SECTION} section in kernel BTF: {e}"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Datasec(d) => Some(d),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no {SECTION} section in kernel BTF"))?;
    for v in &section.variables {
        if let Type::Var(var) = btf.resolve_chained_type(v)?
            && btf.resolve_name(&var)? == name
        {
            return Ok(v.offset());
        }
    }
    bail!("no per-CPU variable {name} in kernel BTF")
}

/// The address of data symbol `name` in `/proc/kallsyms` text
/// (`ADDRESS TYPE NAME [MODULE]` per line). Public for the fuzzer.
pub fn data_symbol(kallsyms: &str, name: &str) -> Result<u64> {
    let mut hidden = false;
    for line in kallsyms.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(symbol), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // Per-CPU variables are absolute symbols (`A`) where the per-CPU
        // area is zero-based (x86_64 before Linux 6.15).
        if symbol != name || !matches!(kind, "d" | "D" | "b" | "B" | "a" | "A") {
            continue;
        }
        match u64::from_str_radix(address, 16) {
            Ok(0) => hidden = true,
            Ok(address) => return Ok(address),
            Err(_) => bail!("{KALLSYMS}: {name} has address {address:?}, not a hex number"),
        }
    }
    if hidden {
        bail!("{KALLSYMS} hides addresses (sysctl kernel.kptr_restrict)");
    }
    bail!("no {name} in {KALLSYMS} (a kernel built without CONFIG_KALLSYMS_ALL)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::{find_struct, load_vmlinux};

    #[test]
    fn finds_the_guard_on_this_kernel() {
        let btf = load_vmlinux().expect("this test needs the kernel's BTF");
        let g = offsets(&btf).unwrap();
        // `pptrs` follows the embedded `struct bpf_map`.
        let map = find_struct(&btf, "bpf_map").unwrap();
        assert!(usize::from(g.array_pptrs) >= map.size(), "{g:?}");
        // Derived here (this kernel's BTF has the per-CPU section): both
        // variables lie in it, at different places.
        assert!(g.proto_fw_alloc > 0, "{g:?}");
        assert_ne!(g.prog_active_delta, 0, "{g:?}");
        let err = percpu_offset(&btf, "no_such_percpu_variable").unwrap_err();
        assert!(
            format!("{err:#}").contains("no per-CPU variable"),
            "{err:#}"
        );
    }

    #[test]
    fn data_symbols_from_kallsyms() {
        let text = "\
ffffffff81000000 T _text
000000000002a0e8 T bpf_prog_active
000000000002b0e8 A bpf_prog_active
0000000000031000 d tcp_memory_per_cpu_fw_alloc
ffffffffc0a01000 t helper\t[veth]
";
        // The text symbol of the same name is not the variable.
        assert_eq!(data_symbol(text, "bpf_prog_active").unwrap(), 0x2b0e8);
        assert_eq!(
            data_symbol(text, "tcp_memory_per_cpu_fw_alloc").unwrap(),
            0x31000
        );
        let missing = data_symbol(text, "no_such").unwrap_err().to_string();
        assert!(missing.contains("CONFIG_KALLSYMS_ALL"), "{missing}");
        let hidden = data_symbol("0000000000000000 D bpf_prog_active\n", "bpf_prog_active")
            .unwrap_err()
            .to_string();
        assert!(hidden.contains("kptr_restrict"), "{hidden}");
        let bad = data_symbol("zz D bpf_prog_active\n", "bpf_prog_active").unwrap_err();
        assert!(bad.to_string().contains("not a hex number"), "{bad}");
    }
}
