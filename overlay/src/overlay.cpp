#include "overlay/overlay.hpp"
