// Block-device discovery, safety checks, the parallel verified writer, and the
// hotplug monitor for station mode.
#pragma once

#include "udev/device.hpp"
#include "udev/flash.hpp"
#include "udev/hotplug.hpp"
