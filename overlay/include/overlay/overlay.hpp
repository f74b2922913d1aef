// The TOML spec and the apkovl generated from it.
#pragma once
namespace rpi::overlay {}
