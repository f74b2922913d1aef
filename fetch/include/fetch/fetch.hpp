// Resolve, download, verify and cache the Alpine RPi tarball.
#pragma once
namespace rpi::fetch {}
