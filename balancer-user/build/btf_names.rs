//! Makes the struct and union names in an eBPF object's BTF acceptable to the kernel.
//!
//! bpf-linker 0.10.1 rewrites Rust struct names into C identifiers but leaves union names
//! as they are; aya-log-ebpf brings a `MaybeUninit<u8>` union (the type of its
//! `AYA_LOG_LEVEL` global), and the kernel refuses the whole BTF for that one name, so aya
//! loads the program without BTF and logs the kernel's refusal on every start. Later
//! bpf-linker releases sanitize unions too (aya-rs/bpf-linker#346); until the project moves
//! to one, this replaces every character outside `[A-Za-z0-9_]` in the name of a struct,
//! a union or one of their members with `_`, in place: the string table keeps its layout,
//! so no offset changes.

use anyhow::{bail, ensure, Context as _, Result};

/// BTF kinds whose names (and members' names) the kernel requires to be identifiers.
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// Rewrites the object at `path`; returns how many names were changed.
pub fn sanitize(path: &std::path::Path) -> Result<usize> {
    let mut object = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let (start, len) = btf_section(&object).context("find the .BTF section")?;
    let changed = sanitize_btf(&mut object[start..start + len])?;
    if changed > 0 {
        std::fs::write(path, &object).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(changed)
}

/// Offset and size of the `.BTF` section of a little-endian ELF64 object.
fn btf_section(elf: &[u8]) -> Result<(usize, usize)> {
    ensure!(
        elf.get(..6) == Some(b"\x7fELF\x02\x01".as_slice()),
        "not a little-endian ELF64 object"
    );
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    let header = |i: usize| -> Result<(usize, usize, usize)> {
        let at = shoff + i * shentsize;
        Ok((
            u32_at(elf, at)? as usize,
            u64_at(elf, at + 24)? as usize,
            u64_at(elf, at + 32)? as usize,
        ))
    };
    let (_, names, _) = header(shstrndx)?;
    for i in 0..shnum {
        let (name, offset, size) = header(i)?;
        if c_str(elf, names + name)? == b".BTF" {
            ensure!(offset + size <= elf.len(), ".BTF runs past the end");
            return Ok((offset, size));
        }
    }
    bail!("no .BTF section")
}

/// Sanitizes the struct and union names of one BTF blob in place.
fn sanitize_btf(btf: &mut [u8]) -> Result<usize> {
    ensure!(u16_at(btf, 0)? == 0xeb9f, "bad BTF magic");
    let hdr_len = u32_at(btf, 4)? as usize;
    let type_start = hdr_len + u32_at(btf, 8)? as usize;
    let type_end = type_start + u32_at(btf, 12)? as usize;
    let strings = hdr_len + u32_at(btf, 16)? as usize;
    let mut names = Vec::new();
    let mut at = type_start;
    while at < type_end {
        let name = u32_at(btf, at)? as usize;
        let info = u32_at(btf, at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        at += 12;
        if kind == KIND_STRUCT || kind == KIND_UNION {
            names.push(name);
            for member in 0..vlen {
                names.push(u32_at(btf, at + 12 * member)? as usize);
            }
        }
        at += match kind {
            // INT, VAR, DECL_TAG
            1 | 14 | 17 => 4,
            // ARRAY
            3 => 12,
            // STRUCT, UNION, DATASEC, ENUM64
            4 | 5 | 15 | 19 => 12 * vlen,
            // ENUM, FUNC_PROTO
            6 | 13 => 8 * vlen,
            // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            2 | 7..=12 | 16 | 18 => 0,
            other => bail!("unknown BTF kind {other}"),
        };
    }
    let mut changed = 0;
    for name in names {
        let start = strings + name;
        let len = c_str(btf, start)?.len();
        let mut fixed = false;
        for byte in &mut btf[start..start + len] {
            if !(byte.is_ascii_alphanumeric() || *byte == b'_') {
                *byte = b'_';
                fixed = true;
            }
        }
        changed += usize::from(fixed);
    }
    Ok(changed)
}

fn c_str(bytes: &[u8], at: usize) -> Result<&[u8]> {
    let rest = bytes.get(at..).context("string offset out of range")?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .context("unterminated string")?;
    Ok(&rest[..end])
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16> {
    let raw = bytes.get(at..at + 2).context("truncated")?;
    Ok(u16::from_le_bytes(raw.try_into()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    let raw = bytes.get(at..at + 4).context("truncated")?;
    Ok(u32::from_le_bytes(raw.try_into()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64> {
    let raw = bytes.get(at..at + 8).context("truncated")?;
    Ok(u64::from_le_bytes(raw.try_into()?))
}
