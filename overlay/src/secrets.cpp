#include "overlay/secrets.hpp"

#include <crypt.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <memory>

#include "rpi/digest.hpp"
#include "rpi/error.hpp"

namespace rpi::overlay {

namespace {

struct BnFree {
  void operator()(BIGNUM* b) const { BN_clear_free(b); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;
struct BnCtxFree {
  void operator()(BN_CTX* c) const { BN_CTX_free(c); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

Bn bn() {
  Bn b(BN_new());
  if (!b) throw Error(Errc::internal, "OpenSSL: out of memory");
  return b;
}

// OpenSSH wire encoding (RFC 4251): uint32 length-prefixed strings and mpints.
void put_u32(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xff);
}
void put_string(std::string& out, std::string_view s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}
void put_mpint(std::string& out, const BIGNUM* b) {
  std::string bytes(static_cast<std::size_t>(BN_num_bytes(b)), '\0');
  BN_bn2bin(b, reinterpret_cast<unsigned char*>(bytes.data()));
  if (!bytes.empty() && (static_cast<unsigned char>(bytes[0]) & 0x80)) bytes.insert(bytes.begin(), '\0');
  put_string(out, bytes);
}

// The "openssh-key-v1" container, unencrypted (what ssh-keygen writes without a passphrase).
std::string openssh_private_file(const std::string& public_blob, const std::string& private_fields,
                                 const std::string& comment, std::string_view check_bytes) {
  std::string priv;
  std::uint32_t check = 0;
  for (int i = 0; i < 4; ++i)
    check = (check << 8) | static_cast<unsigned char>(check_bytes[static_cast<std::size_t>(i)]);
  put_u32(priv, check);
  put_u32(priv, check);
  priv += private_fields;
  put_string(priv, comment);
  for (char pad = 1; priv.size() % 8 != 0; ++pad) priv += pad;

  std::string blob = std::string("openssh-key-v1") + '\0';
  put_string(blob, "none");
  put_string(blob, "none");
  put_string(blob, "");
  put_u32(blob, 1);
  put_string(blob, public_blob);
  put_string(blob, priv);

  std::string b64 = base64(blob);
  std::string out = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  for (std::size_t i = 0; i < b64.size(); i += 70) out += b64.substr(i, 70) + "\n";
  out += "-----END OPENSSH PRIVATE KEY-----\n";
  return out;
}

// A deterministic byte stream: HMAC-SHA256(key, label || counter) blocks.
class Stream {
 public:
  Stream(std::string_view key, std::string_view label) : key_(key), label_(label) {}
  std::string take(std::size_t n) {
    std::string out;
    while (out.size() < n) {
      std::string msg = label_;
      put_u32(msg, counter_++);
      unsigned char mac[32];
      unsigned len = 0;
      HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), reinterpret_cast<const unsigned char*>(msg.data()),
           msg.size(), mac, &len);
      out.append(reinterpret_cast<char*>(mac), len);
    }
    out.resize(n);
    return out;
  }

 private:
  std::string key_, label_;
  std::uint32_t counter_ = 0;
};

// A probable prime of `bits` bits with the two top bits set (so p*q has 2*bits bits)
// and gcd(p-1, e) = 1, searched upwards from a candidate drawn from the stream.
Bn find_prime(Stream& s, int bits, const BIGNUM* e, BN_CTX* ctx) {
  auto bytes = s.take(static_cast<std::size_t>(bits / 8));
  Bn p = bn();
  BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()), p.get());
  BN_set_bit(p.get(), bits - 1);
  BN_set_bit(p.get(), bits - 2);
  BN_set_bit(p.get(), 0);
  Bn pm1 = bn(), g = bn();
  for (;;) {
    if (BN_check_prime(p.get(), ctx, nullptr) == 1) {
      BN_sub(pm1.get(), p.get(), BN_value_one());
      BN_gcd(g.get(), pm1.get(), e, ctx);
      if (BN_is_one(g.get())) return p;
    }
    BN_add_word(p.get(), 2);
  }
}

}  // namespace

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string wifi_psk(std::string_view passphrase, std::string_view ssid) {
  unsigned char out[32];
  if (PKCS5_PBKDF2_HMAC_SHA1(passphrase.data(), static_cast<int>(passphrase.size()),
                             reinterpret_cast<const unsigned char*>(ssid.data()), static_cast<int>(ssid.size()), 4096,
                             sizeof out, out) != 1)
    throw Error(Errc::internal, "PBKDF2 for the Wi-Fi PSK failed");
  return to_hex(std::string_view(reinterpret_cast<char*>(out), sizeof out));
}

std::string derive_bytes(std::string_view seed, std::string_view purpose, std::size_t n) {
  if (seed.empty()) {
    std::string out(n, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
      throw Error(Errc::internal, "OpenSSL could not produce random bytes");
    return out;
  }
  return Stream(seed, purpose).take(n);
}

std::string sha512_crypt(std::string_view password, std::string_view salt_bytes) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!crypt_gensalt_rn("$6$", 0, salt_bytes.data(), static_cast<int>(salt_bytes.size()), setting, sizeof setting))
    throw Error(Errc::internal, "crypt_gensalt for SHA-512 failed");
  auto data = std::make_unique<crypt_data>();
  std::memset(data.get(), 0, sizeof(crypt_data));
  std::string pw(password);
  const char* h = crypt_r(pw.c_str(), setting, data.get());
  std::fill(pw.begin(), pw.end(), '\0');
  if (!h || h[0] != '$') throw Error(Errc::internal, "crypt(3) could not hash a password with SHA-512");
  return h;
}

HostKey ed25519_host_key(std::string_view seed32, const std::string& comment) {
  if (seed32.size() != 32) throw Error(Errc::internal, "ed25519 needs 32 seed bytes");
  std::unique_ptr<EVP_PKEY, PkeyFree> key(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed32.data()), 32));
  if (!key) throw Error(Errc::internal, "OpenSSL could not create an ed25519 key");
  unsigned char pub[32];
  std::size_t publen = sizeof pub;
  if (EVP_PKEY_get_raw_public_key(key.get(), pub, &publen) != 1 || publen != 32)
    throw Error(Errc::internal, "OpenSSL could not derive the ed25519 public key");
  std::string pubs(reinterpret_cast<char*>(pub), 32);

  std::string blob;
  put_string(blob, "ssh-ed25519");
  put_string(blob, pubs);
  std::string fields;
  put_string(fields, "ssh-ed25519");
  put_string(fields, pubs);
  put_string(fields, std::string(seed32) + pubs);

  HostKey k;
  k.type = "ed25519";
  k.algorithm = "ssh-ed25519";
  k.public_blob_b64 = base64(blob);
  k.public_key = k.algorithm + " " + k.public_blob_b64 + " " + comment + "\n";
  k.private_key = openssh_private_file(blob, fields, comment, pubs.substr(0, 4));
  return k;
}

HostKey rsa_host_key(std::string_view seed, const std::string& comment) {
  // One code path for both cases: without a seed, draw one at random.
  std::string key_seed = seed.empty() ? derive_bytes("", "", 32) : std::string(seed);
  std::unique_ptr<BN_CTX, BnCtxFree> ctx(BN_CTX_new());
  Bn e = bn();
  BN_set_word(e.get(), 65537);
  Stream sp(key_seed, "rsa-3072-p"), sq(key_seed, "rsa-3072-q");
  Bn p = find_prime(sp, 1536, e.get(), ctx.get());
  Bn q = find_prime(sq, 1536, e.get(), ctx.get());
  if (BN_cmp(p.get(), q.get()) == 0) throw Error(Errc::internal, "RSA key generation drew equal primes");
  if (BN_cmp(p.get(), q.get()) < 0) std::swap(p, q);
  Bn n = bn(), pm1 = bn(), qm1 = bn(), phi = bn(), d = bn(), iqmp = bn();
  BN_mul(n.get(), p.get(), q.get(), ctx.get());
  BN_sub(pm1.get(), p.get(), BN_value_one());
  BN_sub(qm1.get(), q.get(), BN_value_one());
  BN_mul(phi.get(), pm1.get(), qm1.get(), ctx.get());
  if (!BN_mod_inverse(d.get(), e.get(), phi.get(), ctx.get()) ||
      !BN_mod_inverse(iqmp.get(), q.get(), p.get(), ctx.get()))
    throw Error(Errc::internal, "RSA key generation failed (no modular inverse)");

  std::string blob;
  put_string(blob, "ssh-rsa");
  put_mpint(blob, e.get());
  put_mpint(blob, n.get());
  std::string fields;
  put_string(fields, "ssh-rsa");
  put_mpint(fields, n.get());
  put_mpint(fields, e.get());
  put_mpint(fields, d.get());
  put_mpint(fields, iqmp.get());
  put_mpint(fields, p.get());
  put_mpint(fields, q.get());

  HostKey k;
  k.type = "rsa";
  k.algorithm = "ssh-rsa";
  k.public_blob_b64 = base64(blob);
  k.public_key = k.algorithm + " " + k.public_blob_b64 + " " + comment + "\n";
  k.private_key = openssh_private_file(blob, fields, comment, Stream(key_seed, "rsa-check").take(4));
  return k;
}

}  // namespace rpi::overlay
