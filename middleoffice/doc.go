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
// On them, [Exchanges] runs the exchange itself: a partner submits a
// tele-dossier ([Exchanges.Submit]: the manifest checked, the routing rule
// asked of the policy, each document hashed against its declared digest and
// encrypted for the recipient as it streams in, CMS AuthEnvelopedData); the
// answer is the acknowledgment of receipt, the submission.accepted record
// individually signed (CAdES) and covered by the log; an idempotency key
// returns the same exchange on a retry; refusals are submission.rejected
// evidence. A durable queue seals and delivers through the recipient's
// channel: the pull channel ([Exchanges.Inbox], [Exchanges.Fetch],
// [Exchanges.Ack]), the webhook (a push over mutual TLS whose contract
// [NewWebhookClient] documents, retried with backoff, dead letter after
// exchange.dead_letter_after of failures, each failed attempt evidence),
// and mail (a [PushChannel] that secure mail implements; until then, mail
// recipients use the pull inbox). A sender with a notify_url is told of
// its exchanges' deliveries, answers, failures and expiries
// ([Notification]); a delivery left unanswered for exchange.expire_after
// expires. Every step commits with its evidence through an outbox in the
// [ExchangeStore], so that a crash never leaves a step without its record
// or a record without its step.
package middleoffice
