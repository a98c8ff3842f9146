// Package signing will create and verify CMS (RFC 5652) signatures in the
// CAdES baseline profiles (ETSI EN 319 122-1) and PDF signatures in the PAdES
// profiles (ETSI EN 319 142-1), with keys from package hsm and timestamps from
// package tsa.
package signing
