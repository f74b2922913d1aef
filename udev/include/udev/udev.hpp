// Block-device discovery, safety checks and the parallel verified writer.
#pragma once
namespace rpi::udev {}
