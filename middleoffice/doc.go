// Package middleoffice is the exchange engine. It begins with the node's
// principals and access, in one place:
//
//   - the [Directory] of partners: who they are (id, name, roles), the
//     certificates or issuer-and-subject rules that authenticate them, their
//     encryption certificate, delivery channel, mail addresses and OpenPGP
//     keys, and the routing rules (which sender may send which procedure or
//     document type to which recipient);
//   - the [Principal] a verified client certificate stands for
//     ([Directory.Resolve]), resolved once per certificate and kept until the
//     directory changes;
//   - the [Policy], which every authorization decision asks: signature
//     profiles (the profiles' allowed_clients are among its rules), proof
//     reads, exchanges, partner administration.
//
// The directory's base is the directory section of pec.yaml; partners added
// or changed through the administration API are kept in a [Store] and win
// over the base. Every change is evidence: an admin.action record appended
// through an [evidence.Appender] before the change is stored and applied,
// its id returned.
//
// The routing of tele-dossiers, the delivery channels (pull, webhook, mail)
// and tracking come next.
package middleoffice
