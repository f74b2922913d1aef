// The TOML spec and the apkovl generated from it (umbrella header).
#pragma once

#include "overlay/apkovl.hpp"
#include "overlay/secrets.hpp"
#include "overlay/spec.hpp"
