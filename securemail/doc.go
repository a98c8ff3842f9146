// Package securemail will carry exchanges by email: SMTP submission and
// delivery (RFC 5321, RFC 3207 STARTTLS), S/MIME 4.0 (RFC 8551) and
// OpenPGP/MIME (RFC 3156) signing and encryption, and signed receipts.
package securemail
