//! Compression detection, decompression and module file reading
//! (spec depmod-and-index §4.1, runtime-tools §1.6).

use std::borrow::Cow;
use std::path::Path;

use modcore::compress::{
    self, CompressError, Compression, Decoders, ReadError, ALL_EXTENSIONS, KMOD30_EXTENSIONS,
};
use modcore::elf::ElfError;
use modcore::module;
use tests::synth::{self, SynthModule, Target};

const EINVAL: i32 = 22;

fn sample() -> Vec<u8> {
    SynthModule::new("sample")
        .target(Target::PowerPc)
        .modinfo("alias", "sample-alias")
        .modinfo("license", "GPL")
        .export_crc("sample_fn", 0xdead_beef)
        .needs("printk")
        .version("printk", 0x42)
        .version("module_layout", 0x43)
        // Make the image big enough for multi-block streams.
        .section(
            ".data",
            &(0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        )
        .build()
}

const PACKED: [Compression; 3] = [Compression::Xz, Compression::Zstd, Compression::Gzip];

#[test]
fn extensions() {
    assert_eq!(KMOD30_EXTENSIONS, &[".ko", ".ko.xz", ".ko.zst"]);
    assert_eq!(ALL_EXTENSIONS.len(), 4);
    assert!(ALL_EXTENSIONS.contains(&".ko.gz"));
    for e in KMOD30_EXTENSIONS {
        assert!(ALL_EXTENSIONS.contains(e));
    }
}

#[test]
fn detection_by_magic() {
    assert_eq!(
        compress::detect(&[0x28, 0xB5, 0x2F, 0xFD, 0, 0]),
        Compression::Zstd
    );
    assert_eq!(compress::detect(b"\xFD7zXZ\0rest"), Compression::Xz);
    assert_eq!(compress::detect(b"\xFD7zXZ\x01rest"), Compression::None);
    assert_eq!(
        compress::detect(&[0x1F, 0x8B, 8, 0, 0, 0]),
        Compression::Gzip
    );
    assert_eq!(compress::detect(b"\x7fELF\x02\x01"), Compression::None);
    assert_eq!(compress::detect(b""), Compression::None);
    assert_eq!(compress::detect(&[0x28, 0xB5, 0x2F]), Compression::None);
    // Debian's kmod 30 has no zlib: gzip content is "plain".
    assert_eq!(
        compress::detect_with(&[0x1F, 0x8B, 8, 0, 0, 0], Decoders::KMOD30),
        Compression::None
    );
    for c in PACKED {
        assert_eq!(compress::detect(&synth::compress(b"hello world", c)), c);
    }
    assert_eq!(Compression::Zstd.name(), "zstd");
    assert_eq!(Compression::Xz.to_string(), "xz");
}

#[test]
fn round_trips_give_identical_module_data() {
    let plain = sample();
    let want = module::extract(&plain).expect("plain module");
    assert!(matches!(compress::decompress(&plain), Ok(Cow::Borrowed(_))));
    for c in PACKED {
        let packed = synth::compress(&plain, c);
        assert!(packed.len() < plain.len());
        let out = compress::decompress(&packed).expect("decompress");
        assert!(matches!(out, Cow::Owned(_)));
        assert_eq!(&*out, &plain[..], "{c:?}");
        assert_eq!(module::extract(&out).expect("extract"), want);
    }
}

#[test]
fn empty_payloads_round_trip() {
    for c in PACKED {
        let packed = synth::compress(b"", c);
        assert_eq!(
            &*compress::decompress(&packed).expect("decompress"),
            b"",
            "{c:?}"
        );
    }
}

#[test]
fn gzip_is_plain_for_kmod30() {
    let packed = synth::gzip(&sample());
    let out = compress::decompress_with(&packed, Decoders::KMOD30).expect("plain");
    assert!(matches!(out, Cow::Borrowed(_)));
    // ... and therefore not ELF: ENOEXEC.
    assert!(matches!(module::extract(&out), Err(ElfError::NotElf(_))));
}

#[test]
fn short_inputs_are_einval() {
    for len in 0..6 {
        for prefix in [
            &b"\xFD7zXZ\0"[..],
            b"\x7fELF\x02\x01",
            b"\x28\xB5\x2F\xFD\0\0",
        ] {
            let err = compress::decompress(&prefix[..len]).expect_err("too short");
            assert!(matches!(err, CompressError::TooShort { len: l } if l == len));
            assert_eq!(err.errno(), EINVAL);
        }
    }
    // Six bytes of plain data are fine here (the ELF reader rejects them later).
    assert!(compress::decompress(b"abcdef").is_ok());
}

#[test]
fn corrupt_and_truncated_streams_fail() {
    let plain = sample();
    for c in PACKED {
        let packed = synth::compress(&plain, c);
        // Truncations at many lengths (including just the magic).
        let step = (packed.len() / 97).max(1);
        for len in (6..packed.len()).step_by(step).chain([packed.len() - 1]) {
            let r = compress::decompress(&packed[..len]);
            assert!(r.is_err(), "{c:?} truncated to {len} decoded");
        }
        // Flipped bytes in the middle of the payload.
        for pos in [packed.len() / 3, packed.len() / 2, packed.len() - 9] {
            let mut bad = packed.clone();
            bad[pos] ^= 0x55;
            // All three fixtures carry a checksum, so damage is always detected.
            let err = compress::decompress(&bad).expect_err("corruption detected");
            assert_eq!(err.errno(), EINVAL, "{c:?} flip at {pos}");
        }
        // Magic followed by garbage.
        let mut garbage = packed[..6].to_vec();
        garbage.extend_from_slice(&[0xAA; 64]);
        assert!(compress::decompress(&garbage).is_err(), "{c:?}");
    }
}

#[test]
fn trailing_garbage_is_rejected_for_xz_and_zstd() {
    let plain = sample();
    for c in [Compression::Xz, Compression::Zstd] {
        let mut packed = synth::compress(&plain, c);
        packed.extend_from_slice(b"garbage!");
        assert!(compress::decompress(&packed).is_err(), "{c:?}");
    }
}

#[test]
fn concatenated_streams_are_decoded_whole() {
    for c in PACKED {
        let mut packed = synth::compress(b"first half, ", c);
        packed.extend_from_slice(&synth::compress(b"second half", c));
        let out = compress::decompress(&packed).expect("concatenated");
        assert_eq!(&*out, b"first half, second half", "{c:?}");
    }
    // xz stream padding (NUL bytes in multiples of four) between streams.
    let mut packed = synth::xz(b"a");
    packed.extend_from_slice(&[0; 8]);
    packed.extend_from_slice(&synth::xz(b"b"));
    assert_eq!(&*compress::decompress(&packed).expect("padded"), b"ab");
}

#[test]
fn every_truncation_and_flip_of_small_streams_never_panics() {
    let small = SynthModule::new("s").modinfo("a", "b").needs("x").build();
    for c in PACKED {
        let packed = synth::compress(&small, c);
        for len in 0..=packed.len() {
            if let Ok(out) = compress::decompress(&packed[..len]) {
                let _ = module::extract(&out);
            }
        }
        let mut copy = packed.clone();
        for pos in 0..packed.len() {
            copy[pos] ^= 0x10;
            if let Ok(out) = compress::decompress(&copy) {
                let _ = module::extract(&out);
            }
            copy[pos] ^= 0x10;
        }
    }
}

#[test]
fn bogus_size_declarations_do_not_matter() {
    // A gzip trailer claiming 4 GiB and an xz index claiming a huge size only affect the
    // initial buffer size, which is capped; decoding still validates the data.
    let mut packed = synth::gzip(b"abcdefgh");
    let n = packed.len();
    packed[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(compress::decompress(&packed).is_err()); // ISIZE is checked by the decoder
    let packed = synth::zstd(&[7u8; 1000]);
    assert_eq!(compress::decompress(&packed).expect("ok").len(), 1000);
}

// ---------------------------------------------------------------------------------
// Reading files

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write fixture");
    p
}

#[test]
fn read_plain_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = sample();
    let p = write(dir.path(), "sample.ko", &plain);
    let img = compress::read_module_file(&p).expect("read");
    assert_eq!(img.compression(), Compression::None);
    assert_eq!(&*img, &plain[..]);
    assert!(format!("{img:?}").contains(&format!("len: {}", plain.len())));
}

/// `cp new.ko old.ko` truncates the old file in place. An image read before that stays
/// whole; had it been a mapping of the file, touching its bytes would now kill the test
/// with SIGBUS.
#[test]
fn an_image_survives_truncation_of_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plain = sample();
    plain.resize(64 * 1024, 0);
    let p = write(dir.path(), "sample.ko", &plain);
    let img = compress::read_module_file(&p).expect("read");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    let sum: u64 = img.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(sum, plain.iter().map(|&b| u64::from(b)).sum::<u64>());
    assert_eq!(&*img, &plain[..]);
}

#[test]
fn read_compressed_files_by_content_not_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = sample();
    for c in PACKED {
        // The name lies: the content decides.
        let p = write(dir.path(), "lying.ko", &synth::compress(&plain, c));
        let img = compress::read_module_file(&p).expect("read");
        assert_eq!(img.compression(), c);
        assert_eq!(&*img, &plain[..]);
    }
    let p = write(dir.path(), "plain.ko.xz", &plain);
    let img = compress::read_module_file(&p).expect("read");
    assert_eq!(img.compression(), Compression::None);
    assert_eq!(&*img, &plain[..]);

    let p = write(dir.path(), "g.ko", &synth::gzip(&plain));
    let img = compress::read_module_file_with(&p, Decoders::KMOD30).expect("read");
    assert_eq!(img.compression(), Compression::None);
    assert_eq!(&*img, &synth::gzip(&plain)[..]);
}

/// A (sparse) file of 2 GiB is refused with EFBIG: no module is that big, and reading
/// one whole would take that much memory.
#[test]
fn a_huge_module_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("huge.ko");
    let f = std::fs::File::create(&p).expect("create");
    std::io::Write::write_all(&mut &f, &sample()).expect("write");
    f.set_len(2 << 30).expect("extend (sparse)");
    let err = compress::read_module_file(&p).expect_err("2 GiB");
    assert_eq!(err.errno(), 27); // EFBIG
    assert_eq!(err.path(), p);
    assert!(err.to_string().contains("huge.ko"), "{err}");
}

#[test]
fn read_errors_carry_path_and_errno() {
    let dir = tempfile::tempdir().expect("tempdir");

    let missing = dir.path().join("missing.ko");
    let err = compress::read_module_file(&missing).expect_err("missing");
    assert!(matches!(err, ReadError::Io { .. }));
    assert_eq!(err.path(), missing);
    assert_eq!(err.errno(), 2); // ENOENT
    assert!(err.to_string().contains("missing.ko"));

    for len in [0usize, 1, 5] {
        let p = write(dir.path(), "short.ko", &b"\x7fELF\x02\x01"[..len]);
        let err = compress::read_module_file(&p).expect_err("short");
        assert!(matches!(err, ReadError::Decompress { .. }));
        assert_eq!(err.errno(), EINVAL);
        assert_eq!(err.path(), p);
    }

    let mut bad = synth::xz(&sample());
    bad.truncate(bad.len() / 2);
    let p = write(dir.path(), "bad.ko.xz", &bad);
    let err = compress::read_module_file(&p).expect_err("corrupt");
    assert_eq!(err.errno(), EINVAL);

    let err = compress::read_module_file(dir.path()).expect_err("directory");
    assert_eq!(err.errno(), 21); // EISDIR
}

#[test]
fn from_vec_wraps_bytes() {
    let img = compress::ModuleImage::from_vec(vec![1, 2, 3], Compression::Zstd);
    assert_eq!(&*img, &[1, 2, 3]);
    assert_eq!(img.compression(), Compression::Zstd);
}
