#include "rpi/digest.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "rpi/error.hpp"
#include "rpi/fd.hpp"

namespace rpi {

struct Digest::Ctx {
  EVP_MD_CTX* md = nullptr;
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Digest::Digest(Algo algo) : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  const EVP_MD* type = algo == Algo::sha256 ? EVP_sha256() : EVP_sha512();
  if (!ctx_->md || EVP_DigestInit_ex(ctx_->md, type, nullptr) != 1)
    throw Error(Errc::internal, "OpenSSL digest initialisation failed");
}

Digest::Digest(Digest&&) noexcept = default;
Digest& Digest::operator=(Digest&&) noexcept = default;
Digest::~Digest() = default;

void Digest::update(const void* data, std::size_t len) {
  if (len && EVP_DigestUpdate(ctx_->md, data, len) != 1) throw Error(Errc::internal, "OpenSSL digest update failed");
}

std::string Digest::finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_->md, out, &len) != 1) throw Error(Errc::internal, "OpenSSL digest final failed");
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string Digest::finish_hex() {
  return to_hex(finish());
}

std::string to_hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    s.push_back(digits[c >> 4]);
    s.push_back(digits[c & 15]);
  }
  return s;
}

std::string sha256_hex(std::string_view data) {
  Digest d(Digest::Algo::sha256);
  d.update(data);
  return d.finish_hex();
}

std::string sha256_file_hex(const std::string& path) {
  Fd fd = open_or_throw(path, O_RDONLY);
  Digest d(Digest::Algo::sha256);
  read_to_end(fd.get(), "cannot read " + path, [&](const char* p, std::size_t n) { d.update(p, n); });
  return d.finish_hex();
}

}  // namespace rpi
