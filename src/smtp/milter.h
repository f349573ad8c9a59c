/*
 * milter — the Sendmail milter protocol, version 6, as the MTA speaks it:
 * the packet codec, option negotiation, the macros, and the editing of a
 * message by a milter's end-of-message actions.  Pure (no sockets, no
 * clocks): milter_client.c does the I/O, and tests/unit/test_milter.c
 * checks every part here.
 *
 * A packet is a 32-bit length in network order (the command byte
 * included), a command byte, and data.  The MTA sends the commands below,
 * each but SMFIC_MACRO answered by one reply (unless negotiation said
 * the milter will not reply to it: SMFIP_NR_*); at end of message the
 * milter may send modification replies before its final one.
 *
 * Negotiation (SMFIC_OPTNEG): we offer version 6, every action we apply
 * (MILTER_OUR_ACTIONS) and every protocol step we can leave out
 * (MILTER_OUR_PROTOCOL); the milter answers the subset it wants, and
 * with SMFIF_SETSYMLIST the macros it wants at each stage.  A milter that
 * asks for an action or a protocol flag we did not offer, or a version
 * below 2, fails negotiation (its default action applies).
 *
 * Header values go to the milter as Postfix sends them: without the
 * leading white space after the colon (we do not offer
 * SMFIP_HDR_LEADSPC), folded lines joined with "\n".  Values coming back
 * (add/insert/change header) are folded back with CRLF.
 */
#ifndef MXGATE_MILTER_H
#define MXGATE_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define MILTER_VERSION      6
#define MILTER_PACKET_MAX   (1024 * 1024)   /* a reply larger is an error */
#define MILTER_CHUNK        65535           /* body chunk we send */

/* Commands (MTA to milter). */
#define SMFIC_ABORT     'A'
#define SMFIC_BODY      'B'
#define SMFIC_CONNECT   'C'
#define SMFIC_MACRO     'D'
#define SMFIC_BODYEOB   'E'
#define SMFIC_HELO      'H'
#define SMFIC_QUIT_NC   'K'
#define SMFIC_HEADER    'L'
#define SMFIC_MAIL      'M'
#define SMFIC_EOH       'N'
#define SMFIC_OPTNEG    'O'
#define SMFIC_QUIT      'Q'
#define SMFIC_RCPT      'R'
#define SMFIC_DATA      'T'
#define SMFIC_UNKNOWN   'U'

/* Replies (milter to MTA). */
#define SMFIR_ADDRCPT     '+'
#define SMFIR_DELRCPT     '-'
#define SMFIR_ADDRCPT_PAR '2'
#define SMFIR_SHUTDOWN    '4'
#define SMFIR_ACCEPT      'a'
#define SMFIR_REPLBODY    'b'
#define SMFIR_CONTINUE    'c'
#define SMFIR_DISCARD     'd'
#define SMFIR_CHGFROM     'e'
#define SMFIR_CONN_FAIL   'f'
#define SMFIR_ADDHEADER   'h'
#define SMFIR_INSHEADER   'i'
#define SMFIR_SETSYMLIST  'l'
#define SMFIR_CHGHEADER   'm'
#define SMFIR_PROGRESS    'p'
#define SMFIR_QUARANTINE  'q'
#define SMFIR_REJECT      'r'
#define SMFIR_SKIP        's'
#define SMFIR_TEMPFAIL    't'
#define SMFIR_REPLYCODE   'y'

/* Actions the milter may take (negotiated). */
#define SMFIF_ADDHDRS     0x001
#define SMFIF_CHGBODY     0x002
#define SMFIF_ADDRCPT     0x004
#define SMFIF_DELRCPT     0x008
#define SMFIF_CHGHDRS     0x010
#define SMFIF_QUARANTINE  0x020
#define SMFIF_CHGFROM     0x040
#define SMFIF_ADDRCPT_PAR 0x080
#define SMFIF_SETSYMLIST  0x100
#define MILTER_OUR_ACTIONS 0x1ffu

/* Protocol steps the milter may leave out or not answer. */
#define SMFIP_NOCONNECT   0x000001
#define SMFIP_NOHELO      0x000002
#define SMFIP_NOMAIL      0x000004
#define SMFIP_NORCPT      0x000008
#define SMFIP_NOBODY      0x000010
#define SMFIP_NOHDRS      0x000020
#define SMFIP_NOEOH       0x000040
#define SMFIP_NR_HDR      0x000080
#define SMFIP_NOUNKNOWN   0x000100
#define SMFIP_NODATA      0x000200
#define SMFIP_SKIP        0x000400
#define SMFIP_RCPT_REJ    0x000800
#define SMFIP_NR_CONN     0x001000
#define SMFIP_NR_HELO     0x002000
#define SMFIP_NR_MAIL     0x004000
#define SMFIP_NR_RCPT     0x008000
#define SMFIP_NR_DATA     0x010000
#define SMFIP_NR_UNKN     0x020000
#define SMFIP_NR_EOH      0x040000
#define SMFIP_NR_BODY     0x080000
#define SMFIP_HDR_LEADSPC 0x100000
/* All but RCPT_REJ (we never send rejected recipients) and HDR_LEADSPC. */
#define MILTER_OUR_PROTOCOL 0x0ff7ffu

/* The macro stages of SMFIR_SETSYMLIST, in protocol order. */
enum milter_macro_stage {
	MILTER_M_CONNECT, MILTER_M_HELO, MILTER_M_MAIL, MILTER_M_RCPT,
	MILTER_M_DATA, MILTER_M_EOM, MILTER_M_EOH, MILTER_M_COUNT
};

/* ---- packets ---- */

struct milter_packet {
	char        cmd;
	const char *data;       /* points into the input */
	size_t      len;
};

/* Append one packet. */
void milter_put(struct buf *b, char cmd, const void *data, size_t len);
/* Append a packet whose data is NUL-terminated strings (n of them). */
void milter_put_strings(struct buf *b, char cmd, const char *const *s,
    size_t n);
/*
 * Take one packet from in: its size (header included), 0 while it is
 * incomplete, -1 when it can never be valid (empty, or over
 * MILTER_PACKET_MAX).
 */
long milter_get(const char *in, size_t len, struct milter_packet *p);

/* ---- negotiation ---- */

struct milter_options {
	uint32_t version;
	uint32_t actions;       /* SMFIF_* */
	uint32_t protocol;      /* SMFIP_* */
	/* SETSYMLIST: the macros wanted at each stage, space-separated;
	 * NULL: our default set. */
	char    *macros[MILTER_M_COUNT];
};

/* Our SMFIC_OPTNEG packet. */
void milter_put_optneg(struct buf *b);
/* Read the milter's answer (data of an SMFIC_OPTNEG reply); 0, or -1
 * with why. */
int milter_optneg_parse(const char *data, size_t len,
    struct milter_options *o, char *why, size_t whylen);
void milter_options_free(struct milter_options *o);

/* ---- macros ---- */

/* What the session knows, for the macros ("" or NULL: not sent). */
struct milter_macro_values {
	const char *j;              /* our host name */
	const char *daemon_name;    /* "mxgate" */
	const char *daemon_addr;
	const char *daemon_port;
	const char *client_addr;
	const char *client_port;
	const char *client_name;    /* "unknown": the workers do no rDNS */
	const char *client_ptr;
	const char *underscore;     /* "_": "helo [addr]" */
	const char *i;              /* the queue id */
	const char *tls_version;
	const char *cipher;
	const char *cipher_bits;
	const char *auth_type;
	const char *auth_authen;
	const char *mail_addr;
	const char *rcpt_addr;
	const char *rcpt_host;
	const char *rcpt_mailer;    /* the route's action */
	const char *mail_mailer;
};

/*
 * The SMFIC_MACRO packet for stage, with cmd the command it precedes:
 * the macros the milter asked for (wanted, space-separated), or our
 * default set of the stage when wanted is NULL; those without a value
 * are left out.  Nothing is appended when none has a value.
 */
void milter_put_macros(struct buf *b, enum milter_macro_stage stage,
    char cmd, const char *wanted, const struct milter_macro_values *v);

/* ---- replies ---- */

enum milter_reply_kind {
	MR_CONTINUE, MR_ACCEPT, MR_REJECT, MR_TEMPFAIL, MR_DISCARD,
	MR_REPLYCODE, MR_SKIP, MR_PROGRESS,
	/* end-of-message modifications */
	MR_ADDHEADER, MR_INSHEADER, MR_CHGHEADER, MR_ADDRCPT, MR_DELRCPT,
	MR_REPLBODY, MR_QUARANTINE, MR_CHGFROM,
	MR_SHUTDOWN,            /* SMFIR_SHUTDOWN, SMFIR_CONN_FAIL */
};

struct milter_reply {
	enum milter_reply_kind kind;
	uint32_t    index;          /* INSHEADER, CHGHEADER */
	const char *name;           /* header name; rcpt, sender, reason,
	                             * reply text: points into the packet */
	const char *value;          /* header value; ESMTP args (or NULL) */
	const char *body;           /* REPLBODY */
	size_t      body_len;
	int         code;           /* REPLYCODE: 4xx or 5xx */
};

/* Decode a reply packet; 0, or -1 with why (malformed, unknown). */
int milter_reply_parse(const struct milter_packet *p, struct milter_reply *r,
    char *why, size_t whylen);

/*
 * The text of an SMFIR_REPLYCODE ("550 5.7.1 go away", multi-line replies
 * with "550-..." lines and CRLF): the code, and the text after it as one
 * line.  -1 if it does not start with a 4xx or 5xx code.
 */
int milter_replycode_parse(const char *s, int *code, char *text,
    size_t size);

/* ---- editing a message ---- */

enum milter_edit_kind {
	ME_ADDHEADER, ME_INSHEADER, ME_CHGHEADER, ME_REPLBODY,
};

struct milter_edit {
	enum milter_edit_kind kind;
	uint32_t index;
	char    *name;
	char    *value;         /* ME_CHGHEADER: "" deletes */
};

/* The header and body changes one milter asked for, in order. */
struct milter_edits {
	struct milter_edit *v;
	size_t   n;
	bool     body_replaced;
	struct buf body;        /* the new body, CRLF line ends */
};

void milter_edits_init(struct milter_edits *e);
void milter_edits_free(struct milter_edits *e);
/* Record a modification reply (ADD/INS/CHGHEADER, REPLBODY); -1 when the
 * header name or value is malformed (why says how). */
int milter_edits_add(struct milter_edits *e, const struct milter_reply *r,
    char *why, size_t whylen);

/*
 * Apply e to the message msg (header section, empty line, body; CRLF):
 * the result to out.  A header change names the index-th field (from 1)
 * of that name, case-insensitively; past the last one it adds the field
 * (as Sendmail does); an empty value deletes it.  An insert at index i
 * puts the field before the i-th field (0: first); past the end, last.
 */
void milter_edits_apply(const char *msg, size_t len,
    const struct milter_edits *e, struct buf *out);

/*
 * Walk the header fields of msg for the milter: fn(name, value) with the
 * value as milter.h says (leading white space dropped, folds as "\n"),
 * both NUL-terminated in scratch space.  Returns the offset of the body
 * (after the empty line; len when there is none).
 */
size_t milter_headers_walk(const char *msg, size_t len,
    void (*fn)(void *arg, const char *name, const char *value), void *arg);

#endif
