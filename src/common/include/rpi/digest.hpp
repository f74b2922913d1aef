// Streaming SHA-256 / SHA-512 over OpenSSL EVP.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace rpi {

class Digest {
 public:
  enum class Algo { sha256, sha512 };
  explicit Digest(Algo algo);
  Digest(Digest&&) noexcept;
  Digest& operator=(Digest&&) noexcept;
  ~Digest();

  void update(const void* data, std::size_t len);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // Raw digest bytes; the object can not be updated afterwards.
  std::string finish();
  // Lower-case hex of finish().
  std::string finish_hex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string to_hex(std::string_view bytes);
std::string sha256_hex(std::string_view data);
std::string sha256_file_hex(const std::string& path);

}  // namespace rpi
