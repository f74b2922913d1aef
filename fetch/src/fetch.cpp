#include "fetch/fetch.hpp"
