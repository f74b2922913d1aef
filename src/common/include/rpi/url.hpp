// URLs in anything shown to a user: credentials are secrets.
#pragma once

#include <string>

namespace rpi {

// Text with every URL's password hidden: "https://user:secret@host/x" becomes
// "https://user:***@host/x" ("https://token@host/x" becomes "https://***@host/x").
// Credentials in a --mirror or --tarball URL (or a spec's [alpine] table) are
// secrets: errors, notes, plans, summaries and cache records pass through this.
std::string redact_urls(std::string text);

}  // namespace rpi
