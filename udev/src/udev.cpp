#include "udev/udev.hpp"
