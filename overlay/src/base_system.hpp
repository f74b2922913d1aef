// The accounts Alpine's alpine-baselayout package ships (its passwd and group
// files). An apkovl that carries /etc/passwd, /etc/group or /etc/shadow replaces
// the package copies entirely (overlay files are protected), so the generated
// files start from these entries.
#pragma once

#include <string_view>
#include <vector>

namespace rpi::overlay::base {

struct Account {
  std::string_view name;
  unsigned uid, gid;
  std::string_view gecos, home, shell;
};
struct Group {
  std::string_view name;
  unsigned gid;
  std::string_view members;  // comma-separated
};

const std::vector<Account>& accounts();
const std::vector<Group>& groups();
const Account* find_account(std::string_view name);
const Group* find_group(std::string_view name);

inline constexpr unsigned kShadowGid = 42;

}  // namespace rpi::overlay::base
