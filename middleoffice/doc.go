// Package middleoffice will be the exchange engine: the directory of
// partners, the routing of tele-dossiers to their recipients, the delivery
// channels (pull, webhook, mail), and the tracking of every step as evidence.
package middleoffice
