// Package frontoffice will serve the thin web portals, citizen and agent,
// and run the procedure modules on top of the middle office.
package frontoffice
