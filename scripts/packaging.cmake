# The Debian package:  cpack -G DEB  (run in the build directory, or with
# --config <build>/CPackConfig.cmake). Included by the top-level CMakeLists.txt after
# every install() rule is known. The package contains exactly the `cmake --install`
# layout (see docs/CMakeLists.txt) under /usr.

set(CPACK_GENERATOR "DEB" CACHE STRING "CPack generators to run by default")
set(CPACK_PACKAGE_NAME "rpi-provision")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "rpi-provision developers")
set(CPACK_PACKAGE_CONTACT "rpi-provision developers <rpi-provision@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "build ready-to-boot Alpine Linux SD cards for the Raspberry Pi")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_STRIP_FILES ON)
# Packages are built from a clean staging tree inside the CPack output directory.
set(CPACK_SET_DESTDIR OFF)

set(CPACK_DEBIAN_PACKAGE_NAME "rpi-provision")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_DEBIAN_PACKAGE_SECTION "admin")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# Extended description below the summary line; CPack indents it and turns the empty
# line into the " ." paragraph separator of debian/control.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "rpi-provision turns a short TOML spec into Raspberry Pi SD cards (or .img +
.bmap image files) that boot Alpine Linux in diskless mode, fully configured:
hostname, network and Wi-Fi, users and SSH keys, packages, services, files
and first-boot scripts.

It downloads and verifies the Alpine RPi boot tarball (cached), builds the
MBR, FAT32 file system and apkovl in-process without mounting or root, and
writes several cards in parallel with read-back verification.")

# Runtime dependencies from the linked shared libraries (dpkg-shlibdeps, from dpkg-dev):
# libarchive13, libfdisk1, libblkid1, libcurl4, libyaml-cpp0.7, libgpgme11, libcrypt1,
# libssl3, libudev1 and the C++ runtime, each with the right minimum version.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# postinst creates the rpi-provision group (udev rules) and system user (station unit).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "bmap-tools")

# Maintainer script, generated into the build tree so the source has a single owner.
set(_rpi_deb_dir ${PROJECT_BINARY_DIR}/debian-control)
file(MAKE_DIRECTORY ${_rpi_deb_dir})
file(CONFIGURE OUTPUT ${_rpi_deb_dir}/postinst @ONLY CONTENT [=[#!/bin/sh
# postinst of rpi-provision: the group that may write SD cards, the station user,
# and fresh udev rules.
set -e

if [ "$1" = "configure" ]; then
  # The group may write removable disks (60-rpi-provision.rules); the system user
  # of the same name runs rpi-provision-station.service.
  if ! getent group rpi-provision >/dev/null 2>&1; then
    addgroup --system --quiet rpi-provision
  fi
  if ! getent passwd rpi-provision >/dev/null 2>&1; then
    adduser --system --quiet --ingroup rpi-provision --home /var/cache/rpi-provision --no-create-home \
      --gecos "rpi-provision card station" rpi-provision
  fi
  # Only when udev and systemd are running (not in a chroot or container build).
  if command -v udevadm >/dev/null 2>&1 && [ -d /run/udev ]; then
    udevadm control --reload-rules || true
    udevadm trigger --subsystem-match=block --action=change || true
  fi
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || true
  fi
fi

exit 0
]=])
file(CHMOD ${_rpi_deb_dir}/postinst PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
     WORLD_READ WORLD_EXECUTE)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${_rpi_deb_dir}/postinst)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
