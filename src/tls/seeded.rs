//! Reproducible TLS for `synack demo --seed N`: every random choice rustls makes (client
//! and server randoms, session ids, tickets), the X25519 key shares, and the certificate's
//! key, all derived from one seed. The same seed gives the same bytes on the wire.
//!
//! This is for a simulation whose point is a byte-identical capture. It is not secure, and
//! nothing else uses it: `serve` and `fetch` draw from the operating system.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{Error, NamedGroup};

use super::{Identity, TlsError, Validity};
use crate::clock::VIRTUAL_EPOCH;

/// A deterministic generator: SHA-256 of (seed, purpose, counter) blocks.
#[derive(Debug)]
pub struct SeededRandom {
    state: Mutex<(u64, u64)>,
    purpose: &'static str,
}

impl SeededRandom {
    pub fn new(seed: u64, purpose: &'static str) -> Self {
        SeededRandom {
            state: Mutex::new((seed, 0)),
            purpose,
        }
    }

    pub fn fill_bytes(&self, out: &mut [u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for piece in out.chunks_mut(32) {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&state.0.to_be_bytes());
            ctx.update(self.purpose.as_bytes());
            ctx.update(&state.1.to_be_bytes());
            state.1 += 1;
            let block = ctx.finish();
            piece.copy_from_slice(&block.as_ref()[..piece.len()]);
        }
    }
}

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.fill_bytes(buf);
        Ok(())
    }
}

/// X25519 (RFC 7748) with secrets from the seeded generator.
#[derive(Debug)]
struct SeededX25519 {
    rng: &'static SeededRandom,
}

struct X25519Share {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut bytes = [0u8; 32];
        self.rng.fill_bytes(&mut bytes);
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Share { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for X25519Share {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 7748 §6.1: an all-zero result means the peer sent a low-order point.
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// ring's provider with its randomness and key exchange made deterministic from `seed`.
/// `side` keeps the client's and the server's streams apart. The generator lives for
/// the rest of the process (rustls wants `'static`): one small allocation per run.
pub fn provider(seed: u64, side: &'static str) -> Arc<CryptoProvider> {
    let rng: &'static SeededRandom = Box::leak(Box::new(SeededRandom::new(seed, side)));
    let kx: &'static SeededX25519 = Box::leak(Box::new(SeededX25519 { rng }));
    Arc::new(CryptoProvider {
        secure_random: rng,
        kx_groups: vec![kx],
        ..rustls::crypto::ring::default_provider()
    })
}

/// PKCS #8 v1 wrapping of an Ed25519 private key (RFC 8410 §7): a fixed prefix, then the
/// 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A self-signed certificate like [`super::generate`]'s, with an Ed25519 key derived
/// from `seed` (Ed25519 signatures are deterministic too, RFC 8032 §5.1.6), so the
/// certificate and every handshake signature repeat with the seed. It is valid from the
/// virtual clock's start ([`VIRTUAL_EPOCH`], 2026-01-01) for 90 days, not from today:
/// check it against the virtual clock ([`super::VirtualTime`]).
pub fn identity(seed: u64, names: &[String], ip: Ipv4Addr) -> Result<Identity, TlsError> {
    let mut key_seed = [0u8; 32];
    SeededRandom::new(seed, "certificate key").fill_bytes(&mut key_seed);
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&key_seed);
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    super::self_signed(
        names,
        ip,
        &key,
        PrivateKeyDer::Pkcs8(der.clone_key()),
        Validity::from(VIRTUAL_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
        let draw = |seed, purpose| {
            let r = SeededRandom::new(seed, purpose);
            let mut a = [0u8; 40];
            r.fill_bytes(&mut a);
            a
        };
        assert_eq!(draw(7, "x"), draw(7, "x"));
        assert_ne!(draw(7, "x"), draw(8, "x"));
        assert_ne!(draw(7, "x"), draw(7, "y"));
    }

    #[test]
    fn seeded_certificates_repeat() {
        let names = ["synack.test".to_owned()];
        let ip = Ipv4Addr::new(10, 77, 0, 2);
        let a = identity(1, &names, ip).unwrap();
        let b = identity(1, &names, ip).unwrap();
        let c = identity(2, &names, ip).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_ne!(a.cert_pem, c.cert_pem);
    }
}
