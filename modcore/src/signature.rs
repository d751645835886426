//! The signature appended to a kernel module, as modinfo shows it (runtime-tools §7.2).
//!
//! A signed module ends with:
//!
//! ```text
//! [ module ELF image          ]
//! [ signer name               ]  signer_len bytes   (0 for PKCS#7)
//! [ key identifier            ]  key_id_len bytes   (0 for PKCS#7)
//! [ signature data            ]  sig_len bytes      (DER PKCS#7 for id_type 2)
//! [ struct module_signature   ]  12 bytes: algo, hash, id_type, signer_len,
//! [                           ]            key_id_len, 3 pad bytes, u32 BE sig_len
//! [ "~Module signature appended~\n" ]  28 bytes
//! ```
//!
//! [`parse`] follows kmod 30 (built with libcrypto) exactly where it matters for output:
//!
//! * no magic, a trailer shorter than 12 bytes, `algo >= 2`, `hash >= 9`,
//!   `id_type >= 3`, `sig_len == 0`, or lengths that do not fit: no signature;
//! * id_type 2 (PKCS#7): the last `sig_len` bytes before the 12-byte block are a DER
//!   PKCS#7 `signedData`. From its **first** SignerInfo: the signer is the issuer's
//!   first commonName (or, without one, the issuer's last attribute; empty when the
//!   issuer has no attribute), cut at the first NUL; the key id is the issuer serial
//!   number as unsigned big-endian magnitude without leading zeros; the hash algorithm
//!   comes from the digest algorithm OID; the signature is the encryptedDigest. If the
//!   DER cannot be parsed, or the digest algorithm is not one of the nine known ones
//!   (md4, md5, sha1, rmd160, sha256, sha384, sha512, sha224, sm3), there is no
//!   signature at all (observed with kmod 30: a sha3-256 signature prints no signature
//!   lines);
//! * other id types: signer, key id and signature are the raw byte ranges, and the hash
//!   algorithm is the `hash` byte's name.
//!
//! The DER reader is a small bounded one written for this purpose rather than a crate
//! such as `der`/`cms`: we need only a handful of fields, must tolerate exactly what the
//! OpenSSL PKCS#7 decoder tolerates (BER indefinite lengths included) and must return
//! "no signature" instead of an error on anything else; the typed `cms` decoders are
//! strict DER and would pull in a large dependency tree for ~200 lines of parsing. Every
//! step is bounded by the input length and the nesting depth is capped.

/// The magic string that ends a signed module.
pub const SIG_MAGIC: &[u8; 28] = b"~Module signature appended~\n";

/// Size of `struct module_signature`.
pub const MODULE_SIGNATURE_SIZE: usize = 12;

/// `id_type` value of a PKCS#7 signature (the only kind modern kernels produce).
pub const ID_TYPE_PKCS7: u8 = 2;

/// Public-key algorithm names, indexed by the `algo` byte.
const PKEY_ALGO: [&str; 2] = ["DSA", "RSA"];
/// Hash algorithm names, indexed by the `hash` byte.
const PKEY_HASH: [&str; 9] = [
    "md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224", "sm3",
];
/// Key identifier type names, indexed by the `id_type` byte.
const PKEY_ID_TYPE: [&str; 3] = ["PGP", "X509", "PKCS#7"];

/// The raw signature trailer: `struct module_signature` plus where the pieces are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// `algo` byte.
    pub algo: u8,
    /// `hash` byte.
    pub hash: u8,
    /// `id_type` byte.
    pub id_type: u8,
    /// `signer_len` byte.
    pub signer_len: u8,
    /// `key_id_len` byte.
    pub key_id_len: u8,
    /// `sig_len` (big-endian in the file).
    pub sig_len: u32,
    /// Length of the image without signer, key id, signature, block and magic.
    pub module_len: usize,
}

impl Trailer {
    /// Offset of the 12-byte `struct module_signature`.
    pub fn block_offset(&self) -> usize {
        self.module_len
            + usize::from(self.signer_len)
            + usize::from(self.key_id_len)
            + self.sig_len as usize
    }

    /// The signature data range `start..end` in the image.
    pub fn signature_range(&self) -> std::ops::Range<usize> {
        let end = self.block_offset();
        end - self.sig_len as usize..end
    }
}

/// Reads the trailer if the image ends with [`SIG_MAGIC`] and the lengths fit. The
/// `algo`/`hash`/`id_type` values are not checked here (see [`parse`]).
pub fn trailer(image: &[u8]) -> Option<Trailer> {
    let size = image.len().checked_sub(SIG_MAGIC.len())?;
    if image[size..] != SIG_MAGIC[..] {
        return None;
    }
    let block_at = size.checked_sub(MODULE_SIGNATURE_SIZE)?;
    let b = &image[block_at..size];
    let sig_len = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    if sig_len == 0 {
        return None;
    }
    let payload = u64::from(b[3]) + u64::from(b[4]) + u64::from(sig_len);
    let module_len = (block_at as u64).checked_sub(payload)?;
    Some(Trailer {
        algo: b[0],
        hash: b[1],
        id_type: b[2],
        signer_len: b[3],
        key_id_len: b[4],
        sig_len,
        module_len: usize::try_from(module_len).ok()?,
    })
}

/// Length of the image without its appended signature (the whole length when there is
/// no well-formed trailer).
pub fn unsigned_len(image: &[u8]) -> usize {
    trailer(image).map_or(image.len(), |t| t.module_len)
}

/// What modinfo shows about a module signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    /// `algo` byte of the trailer (0 DSA, 1 RSA; kmod does not print it).
    pub algo: u8,
    /// `id_type` byte of the trailer (0 PGP, 1 X509, 2 PKCS#7).
    pub id_type: u8,
    /// Signer name (may be empty).
    pub signer: Vec<u8>,
    /// Key identifier bytes (for PKCS#7: the certificate serial number).
    pub key_id: Vec<u8>,
    /// Hash algorithm name, e.g. `sha256`.
    pub hash_algo: &'static str,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

impl SignatureInfo {
    /// The `sig_id` value: `PGP`, `X509` or `PKCS#7`.
    pub fn id_type_name(&self) -> &'static str {
        PKEY_ID_TYPE
            .get(usize::from(self.id_type))
            .copied()
            .unwrap_or("unknown")
    }

    /// The public-key algorithm name (`DSA` or `RSA`).
    pub fn algo_name(&self) -> &'static str {
        PKEY_ALGO
            .get(usize::from(self.algo))
            .copied()
            .unwrap_or("unknown")
    }

    /// The five modinfo entries in output order: `sig_id`, `signer`, `sig_key`,
    /// `sig_hashalgo`, `signature`. Binary values are formatted with [`hex_wrapped`];
    /// the signer is cut at its first NUL, as kmod stores it as a C string.
    pub fn modinfo_fields(&self) -> [(&'static str, Vec<u8>); 5] {
        let signer = match self.signer.iter().position(|&b| b == 0) {
            Some(n) => self.signer[..n].to_vec(),
            None => self.signer.clone(),
        };
        [
            ("sig_id", self.id_type_name().as_bytes().to_vec()),
            ("signer", signer),
            ("sig_key", hex_wrapped(&self.key_id).into_bytes()),
            ("sig_hashalgo", self.hash_algo.as_bytes().to_vec()),
            ("signature", hex_wrapped(&self.signature).into_bytes()),
        ]
    }
}

/// Formats bytes the way modinfo prints `sig_key` and `signature`: upper-case two-digit
/// hex separated by `:`, and after every 20th byte (except the last) the `:` is followed
/// by `"\n\t\t"`. Empty input gives an empty string.
pub fn hex_wrapped(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 3 + bytes.len() / 20 * 3);
    for (i, b) in bytes.iter().enumerate() {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xF)]));
        if i + 1 < bytes.len() {
            s.push(':');
            if (i + 1) % 20 == 0 {
                s.push_str("\n\t\t");
            }
        }
    }
    s
}

/// Parses the appended signature of a (decompressed) module image. `None` when the
/// image carries no signature kmod 30 would show (see the module documentation).
pub fn parse(image: &[u8]) -> Option<SignatureInfo> {
    let t = trailer(image)?;
    if usize::from(t.algo) >= PKEY_ALGO.len()
        || usize::from(t.hash) >= PKEY_HASH.len()
        || usize::from(t.id_type) >= PKEY_ID_TYPE.len()
    {
        return None;
    }
    let sig_range = t.signature_range();
    let sig = &image[sig_range.clone()];
    if t.id_type == ID_TYPE_PKCS7 {
        let p = pkcs7::parse(sig)?;
        return Some(SignatureInfo {
            algo: t.algo,
            id_type: t.id_type,
            signer: p.signer,
            key_id: p.serial,
            hash_algo: p.hash_algo,
            signature: p.signature,
        });
    }
    let key_start = sig_range.start - usize::from(t.key_id_len);
    let signer_start = key_start - usize::from(t.signer_len);
    Some(SignatureInfo {
        algo: t.algo,
        id_type: t.id_type,
        signer: image[signer_start..key_start].to_vec(),
        key_id: image[key_start..sig_range.start].to_vec(),
        hash_algo: PKEY_HASH[usize::from(t.hash)],
        signature: sig.to_vec(),
    })
}

/// A bounded BER/DER reader: just enough to walk a PKCS#7 structure.
mod der {
    /// Maximum nesting depth followed when measuring indefinite-length values.
    const MAX_DEPTH: u32 = 32;

    pub const CLASS_UNIVERSAL: u8 = 0;
    pub const CLASS_CONTEXT: u8 = 2;
    pub const INTEGER: u32 = 2;
    pub const OCTET_STRING: u32 = 4;
    pub const OID: u32 = 6;
    pub const SEQUENCE: u32 = 16;
    pub const SET: u32 = 17;

    /// One decoded value.
    #[derive(Debug, Clone, Copy)]
    pub struct Tlv<'a> {
        pub class: u8,
        pub constructed: bool,
        pub number: u32,
        pub content: &'a [u8],
    }

    impl<'a> Tlv<'a> {
        pub fn is(&self, class: u8, constructed: bool, number: u32) -> bool {
            self.class == class && self.constructed == constructed && self.number == number
        }

        pub fn is_universal(&self, constructed: bool, number: u32) -> bool {
            self.is(CLASS_UNIVERSAL, constructed, number)
        }

        pub fn children(&self) -> Reader<'a> {
            Reader::new(self.content)
        }
    }

    /// Reads consecutive values from a byte slice.
    #[derive(Debug, Clone, Copy)]
    pub struct Reader<'a> {
        data: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(data: &'a [u8]) -> Reader<'a> {
            Reader { data }
        }

        pub fn is_empty(&self) -> bool {
            self.data.is_empty()
        }

        /// Looks at the next value without consuming it.
        pub fn peek(&self) -> Option<Tlv<'a>> {
            read_tlv(self.data, 0).map(|(tlv, _)| tlv)
        }

        /// Consumes the next value.
        pub fn next_tlv(&mut self) -> Option<Tlv<'a>> {
            let (tlv, used) = read_tlv(self.data, 0)?;
            self.data = &self.data[used..];
            Some(tlv)
        }

        /// Consumes the next value if it has the given universal tag.
        pub fn expect(&mut self, constructed: bool, number: u32) -> Option<Tlv<'a>> {
            let tlv = self.next_tlv()?;
            tlv.is_universal(constructed, number).then_some(tlv)
        }

        /// Consumes the next value if it is a context-specific constructed `[number]`.
        pub fn optional_context(&mut self, number: u32) -> Option<Tlv<'a>> {
            let tlv = self.peek()?;
            if tlv.is(CLASS_CONTEXT, true, number) {
                self.next_tlv()
            } else {
                None
            }
        }
    }

    /// Decodes one value at the start of `data`: the value and the number of bytes used.
    fn read_tlv(data: &[u8], depth: u32) -> Option<(Tlv<'_>, usize)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let first = *data.first()?;
        let class = first >> 6;
        let constructed = first & 0x20 != 0;
        let mut pos = 1;
        let mut number = u32::from(first & 0x1F);
        if number == 0x1F {
            number = 0;
            loop {
                let b = *data.get(pos)?;
                pos += 1;
                if number > (u32::MAX >> 7) {
                    return None;
                }
                number = (number << 7) | u32::from(b & 0x7F);
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let len_byte = *data.get(pos)?;
        pos += 1;
        if len_byte == 0x80 {
            // Indefinite length: contents run until a matching end-of-contents (00 00).
            if !constructed {
                return None;
            }
            let body = &data[pos..];
            let mut off = 0;
            loop {
                if body.get(off..off + 2)? == [0, 0] {
                    let tlv = Tlv {
                        class,
                        constructed,
                        number,
                        content: &body[..off],
                    };
                    return Some((tlv, pos + off + 2));
                }
                let (_, used) = read_tlv(&body[off..], depth + 1)?;
                off += used;
            }
        }
        let len = if len_byte < 0x80 {
            usize::from(len_byte)
        } else {
            let n = usize::from(len_byte & 0x7F);
            if n > 8 {
                return None;
            }
            let mut len: u64 = 0;
            for _ in 0..n {
                len = (len << 8) | u64::from(*data.get(pos)?);
                pos += 1;
            }
            usize::try_from(len).ok()?
        };
        let end = pos.checked_add(len)?;
        let content = data.get(pos..end)?;
        Some((
            Tlv {
                class,
                constructed,
                number,
                content,
            },
            end,
        ))
    }
}

/// The few fields of a PKCS#7 signedData that modinfo shows.
mod pkcs7 {
    use super::der::{self, Reader, Tlv};

    /// OID 1.2.840.113549.1.7.2 (pkcs7-signedData), content bytes.
    const OID_SIGNED_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02];
    /// OID 2.5.4.3 (commonName), content bytes.
    const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    /// Digest algorithm OIDs (content bytes) and kmod's names for them.
    const DIGESTS: &[(&[u8], &str)] = &[
        (&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x04], "md4"),
        (&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x05], "md5"),
        (&[0x2B, 0x0E, 0x03, 0x02, 0x1A], "sha1"),
        (&[0x2B, 0x24, 0x03, 0x02, 0x01], "rmd160"),
        (
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
            "sha256",
        ),
        (
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
            "sha384",
        ),
        (
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
            "sha512",
        ),
        (
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04],
            "sha224",
        ),
        (&[0x2A, 0x81, 0x1C, 0xCF, 0x55, 0x01, 0x83, 0x11], "sm3"),
    ];

    pub struct Pkcs7Info {
        pub signer: Vec<u8>,
        pub serial: Vec<u8>,
        pub hash_algo: &'static str,
        pub signature: Vec<u8>,
    }

    /// Checks an INTEGER the way OpenSSL does (non-empty, no redundant leading byte) and
    /// returns its magnitude as big-endian bytes without leading zeros.
    fn integer_magnitude(tlv: &Tlv<'_>) -> Option<Vec<u8>> {
        let c = tlv.content;
        let first = *c.first()?;
        let negative = first & 0x80 != 0;
        if c.len() > 1 {
            let padded = match first {
                0x00 => true,
                0xFF => c[1..].iter().any(|&b| b != 0),
                _ => false,
            };
            if padded && negative == (c[1] & 0x80 != 0) {
                return None;
            }
        }
        let mut mag = c.to_vec();
        if negative {
            // Two's complement negation gives the magnitude.
            for b in mag.iter_mut() {
                *b = !*b;
            }
            for b in mag.iter_mut().rev() {
                let (v, carry) = b.overflowing_add(1);
                *b = v;
                if !carry {
                    break;
                }
            }
        }
        let skip = mag.iter().take_while(|&&b| b == 0).count();
        mag.drain(..skip);
        Some(mag)
    }

    /// AlgorithmIdentifier: SEQUENCE { OID, parameters OPTIONAL }. Returns the OID.
    fn algorithm<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
        let seq = r.expect(true, der::SEQUENCE)?;
        let mut inner = seq.children();
        let oid = inner.expect(false, der::OID)?;
        if !inner.is_empty() {
            inner.next_tlv()?;
        }
        inner.is_empty().then_some(oid.content)
    }

    /// The issuer Name: SEQUENCE OF SET OF SEQUENCE { type OID, value }. Returns the
    /// value bytes kmod shows (first commonName, else the last attribute).
    fn issuer_signer(name: &Tlv<'_>) -> Option<Vec<u8>> {
        let mut common_name: Option<&[u8]> = None;
        let mut last: Option<&[u8]> = None;
        let mut rdns = name.children();
        while !rdns.is_empty() {
            let rdn = rdns.expect(true, der::SET)?;
            let mut attrs = rdn.children();
            while !attrs.is_empty() {
                let attr = attrs.expect(true, der::SEQUENCE)?;
                let mut parts = attr.children();
                let oid = parts.expect(false, der::OID)?;
                let value = parts.next_tlv()?;
                if !parts.is_empty() {
                    return None;
                }
                if oid.content == OID_COMMON_NAME && common_name.is_none() {
                    common_name = Some(value.content);
                }
                last = Some(value.content);
            }
        }
        // The first commonName; without one, the last attribute; else nothing.
        Some(common_name.or(last).map(cut_at_nul).unwrap_or_default())
    }

    fn cut_at_nul(v: &[u8]) -> Vec<u8> {
        match v.iter().position(|&b| b == 0) {
            Some(n) => v[..n].to_vec(),
            None => v.to_vec(),
        }
    }

    /// OCTET STRING contents; a constructed (BER) string is the concatenation of its
    /// primitive pieces.
    fn octets(tlv: &Tlv<'_>) -> Option<Vec<u8>> {
        if tlv.is_universal(false, der::OCTET_STRING) {
            return Some(tlv.content.to_vec());
        }
        if !tlv.is_universal(true, der::OCTET_STRING) {
            return None;
        }
        let mut out = Vec::with_capacity(tlv.content.len());
        let mut r = tlv.children();
        while !r.is_empty() {
            out.extend_from_slice(r.expect(false, der::OCTET_STRING)?.content);
        }
        Some(out)
    }

    /// SignerInfo ::= SEQUENCE { version, issuerAndSerialNumber, digestAlgorithm,
    /// [0] authenticatedAttributes OPTIONAL, digestEncryptionAlgorithm, encryptedDigest,
    /// [1] unauthenticatedAttributes OPTIONAL }
    fn signer_info(si: &Tlv<'_>) -> Option<Pkcs7Info> {
        if !si.is_universal(true, der::SEQUENCE) {
            return None;
        }
        let mut r = si.children();
        integer_magnitude(&r.expect(false, der::INTEGER)?)?;
        let ias = r.expect(true, der::SEQUENCE)?;
        let mut ias_r = ias.children();
        let issuer = ias_r.expect(true, der::SEQUENCE)?;
        let serial = integer_magnitude(&ias_r.expect(false, der::INTEGER)?)?;
        if !ias_r.is_empty() {
            return None;
        }
        let digest_oid = algorithm(&mut r)?;
        r.optional_context(0);
        algorithm(&mut r)?;
        let signature = octets(&r.next_tlv()?)?;
        r.optional_context(1);
        if !r.is_empty() {
            return None;
        }
        let (_, hash_algo) = DIGESTS.iter().find(|(oid, _)| *oid == digest_oid)?;
        Some(Pkcs7Info {
            signer: issuer_signer(&issuer)?,
            serial,
            hash_algo,
            signature,
        })
    }

    /// Parses a DER (or BER) PKCS#7 ContentInfo holding signedData. Bytes after the
    /// ContentInfo are ignored.
    pub fn parse(der_bytes: &[u8]) -> Option<Pkcs7Info> {
        let ci = Reader::new(der_bytes).expect(true, der::SEQUENCE)?;
        let mut r = ci.children();
        let content_type = r.expect(false, der::OID)?;
        if content_type.content != OID_SIGNED_DATA {
            return None;
        }
        let explicit = r.optional_context(0)?;
        if !r.is_empty() {
            return None;
        }
        let mut e = explicit.children();
        let signed = e.expect(true, der::SEQUENCE)?;
        if !e.is_empty() {
            return None;
        }

        // SignedData ::= SEQUENCE { version, digestAlgorithms SET, contentInfo,
        //   [0] certificates OPTIONAL, [1] crls OPTIONAL, signerInfos SET }
        let mut s = signed.children();
        integer_magnitude(&s.expect(false, der::INTEGER)?)?;
        s.expect(true, der::SET)?;
        let inner = s.expect(true, der::SEQUENCE)?;
        inner.children().expect(false, der::OID)?;
        s.optional_context(0);
        s.optional_context(1);
        let infos = s.expect(true, der::SET)?;
        if !s.is_empty() {
            return None;
        }
        let mut infos_r = infos.children();
        let first = infos_r.next_tlv()?;
        let info = signer_info(&first)?;
        // The other SignerInfos must at least be well-formed values.
        while !infos_r.is_empty() {
            infos_r.next_tlv()?;
        }
        Some(info)
    }
}
