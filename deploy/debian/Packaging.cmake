# SPDX-License-Identifier: Apache-2.0
# The Debian package, built by CPack's DEB generator (`cpack -G DEB` in the build tree; tests/package.sh
# builds, lints, verifies and installs it). No debian/ directory: the control data comes from here.

find_program(SCDOC scdoc REQUIRED)
find_program(GZIP gzip REQUIRED)
set(man_src ${CMAKE_SOURCE_DIR}/docs/ccrelay.8.scd)
set(man_out ${CMAKE_BINARY_DIR}/ccrelay.8.gz)
add_custom_command(OUTPUT ${man_out}
  COMMAND ${SCDOC} < ${man_src} > ${CMAKE_BINARY_DIR}/ccrelay.8
  COMMAND ${GZIP} -9nf ${CMAKE_BINARY_DIR}/ccrelay.8
  DEPENDS ${man_src} VERBATIM)
# Debian policy: a native package ships its changelog compressed, in Debian's changelog format.
set(deb_changelog ${CMAKE_BINARY_DIR}/changelog.gz)
add_custom_command(OUTPUT ${deb_changelog}
  COMMAND ${GZIP} -9nc ${CMAKE_SOURCE_DIR}/deploy/debian/changelog > ${deb_changelog}
  DEPENDS ${CMAKE_SOURCE_DIR}/deploy/debian/changelog VERBATIM)
set(upstream_changelog ${CMAKE_BINARY_DIR}/CHANGELOG.md.gz)
add_custom_command(OUTPUT ${upstream_changelog}
  COMMAND ${GZIP} -9nc ${CMAKE_SOURCE_DIR}/CHANGELOG.md > ${upstream_changelog}
  DEPENDS ${CMAKE_SOURCE_DIR}/CHANGELOG.md VERBATIM)
set(readme_gz ${CMAKE_BINARY_DIR}/README.md.gz)
add_custom_command(OUTPUT ${readme_gz}
  COMMAND ${GZIP} -9nc ${CMAKE_SOURCE_DIR}/README.md > ${readme_gz}
  DEPENDS ${CMAKE_SOURCE_DIR}/README.md VERBATIM)
add_custom_target(package_docs ALL DEPENDS ${man_out} ${deb_changelog} ${upstream_changelog} ${readme_gz})

include(GNUInstallDirs)
install(FILES ${man_out} DESTINATION share/man/man8 COMPONENT ccrelay)
install(FILES ${deb_changelog} ${upstream_changelog} ${readme_gz} DESTINATION share/doc/ccrelay COMPONENT ccrelay)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/debian/copyright ${CMAKE_SOURCE_DIR}/SECURITY.md
        DESTINATION share/doc/ccrelay COMPONENT ccrelay)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/systemd/ccrelay-agent.service
              ${CMAKE_SOURCE_DIR}/deploy/systemd/ccrelay-gateway.service
        DESTINATION lib/systemd/system COMPONENT ccrelay)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/systemd/ccrelay.sysusers DESTINATION lib/sysusers.d
        RENAME ccrelay.conf COMPONENT ccrelay)
# Absolute destination: /etc, not /usr/etc. These are conffiles (deploy/debian/conffiles).
install(FILES ${CMAKE_SOURCE_DIR}/config/agent.yaml ${CMAKE_SOURCE_DIR}/config/gateway.yaml
        DESTINATION /etc/ccrelay PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ COMPONENT ccrelay)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/config/make-sample-certs.sh DESTINATION share/ccrelay COMPONENT ccrelay)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ccrelay)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_CONTACT "ccrelay maintainers <ccrelay-maintainers@users.noreply.github.com>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "open, self-hostable Cloud Connector for OpenTrust CMS and PKI")
# The extended description, below the summary line CPack puts first (lines of at most 80 columns).
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "An agent inside the firewall dials out to a cloud gateway and holds
persistent mutually authenticated TLS tunnels; the gateway sends the cloud
console's HTTPS calls down them, and the agent forwards each to the on-premises
CMS JSON connector or PKI SOAP service with the route's PKCS#12 client
identity, verifying the service against its own trusted-root store.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/ccrelay/ccrelay")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Runtime dependencies on Debian's library packages, computed from the binary by dpkg-shlibdeps.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/deploy/debian/conffiles
    ${CMAKE_SOURCE_DIR}/deploy/debian/postinst
    ${CMAKE_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
