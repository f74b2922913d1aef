// rpi-provision: everything lives in the libraries and src/app.cpp; main only runs it.
#include "app.hpp"

int main(int argc, char** argv) {
  return rpi::cli::run(argc, argv);
}
