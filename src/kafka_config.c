/*-------------------------------------------------------------------------
 *
 * kafka_config.c
 *	  Where librdkafka properties come from, and keeping their secrets out
 *	  of every log line, error and status.
 *
 * Two sources feed the relay's producer and the reply consumer:
 *
 *	- oms.kafka_config, a comma-separated "name=value" list.  PostgreSQL
 *	  logs a changed setting's value on reload, so this setting may not
 *	  hold a secret: its check hook refuses secret-bearing properties.
 *	- oms.kafka_config_file, a properties file ("name=value" per line)
 *	  that only the server's OS user (or root) can read: the one place for
 *	  credentials.  The worker reads it when it builds a client and again
 *	  after each reload; a file with other content than before gets a new
 *	  generation number, which makes kafka.c rebuild its clients.
 *
 * What counts as a secret is decided here (oms_kafka_is_secret_property):
 * the properties librdkafka 2.0.2 itself flags as sensitive, plus any name
 * that mentions a password or a secret.  The values of secret properties
 * read from the file are never put into a message: our own errors name
 * the file, the line and the property only, and every text that comes
 * from librdkafka (its errors, its log lines) goes through
 * oms_kafka_redact() before it is logged or stored.  librdkafka redacts
 * these properties in its own configuration dumps (debug=conf), but it
 * may quote a value elsewhere, e.g. in an error about a malformed one.
 *
 * Only the worker loads the file.  oms_kafka_redact() may run inside
 * librdkafka callbacks on the worker's thread, so it allocates nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "utils/memutils.h"

#include "guc.h"
#include "kafka_config.h"

/* Largest oms.kafka_config_file accepted (a PEM key or two fit easily). */
#define KAFKA_FILE_MAX_BYTES (1024 * 1024)

/* Most items in oms.kafka_config. */
#define KAFKA_CONFIG_MAX_ITEMS 256

/*
 * Secret values are also redacted where only a part of them shows up (a
 * librdkafka message quoting the rest of a value after a parse error, or
 * a line cut short): every run of this many characters of a longer value
 * counts.
 */
#define REDACT_WINDOW 8

/* Longest text oms_kafka_redact() handles; the rest is cut off. */
#define REDACT_MAX 2048

/* Properties librdkafka 2.0.2 flags as sensitive (_RK_SENSITIVE). */
static const char *const sensitive_properties[] = {
	"sasl.username", "sasl.password", "sasl.oauthbearer.config",
	"ssl.key.location", "ssl.key.password", "ssl.key.pem", "ssl_key",
	"ssl.ca.pem", "ssl.keystore.password",
	NULL
};

/* The current file, its generation, and whether a reload happened since it was read. */
static OmsKafkaFile *current_file = NULL;
static uint64 file_generation = 0;
static bool file_stale = true;

/* Every loaded file still in use (the current one, or a client's): redaction sources. */
static OmsKafkaFile *live_files = NULL;

/* ---------------------------------------------------------------- secret names */

/* Case-insensitive substring search: property names are ASCII. */
static bool
name_contains(const char *name, const char *word)
{
	size_t		len = strlen(word);

	for (const char *p = name; *p; p++)
	{
		if (pg_strncasecmp(p, word, len) == 0)
			return true;
	}
	return false;
}

/*
 * True for a property whose value is a credential or key material: the
 * ones librdkafka flags as sensitive, and any whose name mentions a
 * password or a secret (sasl.oauthbearer.client.secret, and whatever a
 * later librdkafka adds under such a name).
 */
bool
oms_kafka_is_secret_property(const char *name)
{
	for (const char *const *s = sensitive_properties; *s; s++)
	{
		if (pg_strcasecmp(name, *s) == 0)
			return true;
	}
	return name_contains(name, "password") || name_contains(name, "secret");
}

/* ---------------------------------------------------------------- oms.kafka_config */

static char *
trim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t' || *s == '\f' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\f' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/*
 * Splits an oms.kafka_config value into properties, palloc'd in the
 * current memory context: "name=value" items separated by commas, blanks
 * around names and values ignored.  An item without "=" continues the
 * previous value, so list-valued properties work: debug=broker,topic.
 *
 * Every well-formed item is returned even when the value has a syntax
 * error, so that the check hook still sees every name; *error is then the
 * first problem (else NULL).  Used by the check hook and by kafka.c.
 */
OmsKafkaProperty *
oms_kafka_split_config(const char *config, int *nprops, char **error)
{
	char	   *copy = pstrdup(config ? config : "");
	OmsKafkaProperty *props = palloc0(sizeof(OmsKafkaProperty) * (KAFKA_CONFIG_MAX_ITEMS + 1));
	int			n = 0;
	char	   *item;
	char	   *save = NULL;

	*error = NULL;
	for (item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
	{
		char	   *trimmed = trim(item);
		char	   *eq;

		if (*trimmed == '\0')
			continue;
		eq = strchr(trimmed, '=');
		if (eq == NULL)
		{
			if (n == 0)
			{
				if (*error == NULL)
					*error = psprintf("oms.kafka_config item \"%s\" is not of the form property=value",
									  trimmed);
				continue;
			}
			props[n - 1].value = psprintf("%s,%s", props[n - 1].value, trimmed);
			continue;
		}
		*eq = '\0';
		if (*trim(trimmed) == '\0')
		{
			if (*error == NULL)
				*error = pstrdup("oms.kafka_config has an item without a property name");
			continue;
		}
		if (n >= KAFKA_CONFIG_MAX_ITEMS)
		{
			if (*error == NULL)
				*error = psprintf("oms.kafka_config has more than %d properties",
								  KAFKA_CONFIG_MAX_ITEMS);
			continue;
		}
		props[n].name = trim(trimmed);
		props[n].value = trim(eq + 1);
		props[n].line = 0;
		n++;
	}
	*nprops = n;
	return props;
}

/* ---------------------------------------------------------------- oms.kafka_config_file */

/* The setting's file as an absolute path: a relative one is relative to the data directory. */
static char *
file_path(const char *setting)
{
	if (is_absolute_path(setting))
		return pstrdup(setting);
	return psprintf("%s/%s", DataDir, setting);
}

/*
 * The policy PostgreSQL applies to its ssl_key_file: owned by the
 * server's user with no access for group or others, or owned by root
 * with at most group read (0640), so that a root-managed secret can be
 * shared through the server's group.  NULL when the file passes.
 */
static char *
permission_problem(const struct stat *st, const char *path)
{
	if (!S_ISREG(st->st_mode))
		return psprintf("oms.kafka_config_file \"%s\" is not a regular file", path);
	if (st->st_uid != geteuid() && st->st_uid != 0)
		return psprintf("oms.kafka_config_file \"%s\" must be owned by the database server's user or root",
						path);
	if ((st->st_uid == geteuid() && (st->st_mode & (S_IRWXG | S_IRWXO)) != 0) ||
		(st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0))
		return psprintf("oms.kafka_config_file \"%s\" has group or world access: "
						"it must be u=rw (0600) or less if owned by the database server's user, "
						"u=rw,g=r (0640) or less if owned by root",
						path);
	return NULL;
}

/*
 * Reads the whole file into file->content, or sets file->error.  Opens
 * first and checks what was opened, so the file checked is the file read;
 * O_NONBLOCK keeps a FIFO from blocking the worker before the check.
 */
static void
read_file(OmsKafkaFile *file)
{
	struct stat st;
	int			fd;
	ssize_t		got;
	size_t		len = 0;

	fd = open(file->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
	if (fd < 0)
	{
		file->error = psprintf("could not open oms.kafka_config_file \"%s\": %s",
							   file->path, strerror(errno));
		return;
	}
	if (fstat(fd, &st) != 0)
	{
		file->error = psprintf("could not stat oms.kafka_config_file \"%s\": %s",
							   file->path, strerror(errno));
		close(fd);
		return;
	}
	file->error = permission_problem(&st, file->path);
	if (file->error != NULL)
	{
		close(fd);
		return;
	}

	file->content = palloc(KAFKA_FILE_MAX_BYTES + 1);
	while ((got = read(fd, file->content + len, KAFKA_FILE_MAX_BYTES + 1 - len)) > 0)
	{
		len += got;
		if (len > KAFKA_FILE_MAX_BYTES)
			break;
	}
	if (got < 0)
		file->error = psprintf("could not read oms.kafka_config_file \"%s\": %s",
							   file->path, strerror(errno));
	else if (len > KAFKA_FILE_MAX_BYTES)
		file->error = psprintf("oms.kafka_config_file \"%s\" is larger than %d bytes",
							   file->path, KAFKA_FILE_MAX_BYTES);
	else if (memchr(file->content, '\0', len) != NULL)
		file->error = psprintf("oms.kafka_config_file \"%s\" contains a NUL byte", file->path);
	close(fd);
	file->content[len] = '\0';
	file->content_len = len;
}

/* Letters, digits, ".", "_" and "-": what librdkafka's property names are made of. */
bool
oms_kafka_valid_property_name(const char *name)
{
	for (const char *c = name; *c; c++)
	{
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			  (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-'))
			return false;
	}
	return *name != '\0';
}

/*
 * Parses file->content into file->props: one "name=value" per line, lines
 * starting with "#" or "!" and blank lines skipped, white space around
 * names and values trimmed, no escapes or continuation lines.  Errors
 * name the line, never its text: a malformed line may be a secret.
 */
static void
parse_file(OmsKafkaFile *file)
{
	char	   *text = pnstrdup(file->content, file->content_len);
	char	   *line = text;
	int			lineno = 0;
	int			room = 16;

	file->parsed = text;
	file->props = palloc0(sizeof(OmsKafkaProperty) * room);
	while (line != NULL)
	{
		char	   *next = strchr(line, '\n');
		char	   *eq;
		char	   *name;

		if (next != NULL)
			*next++ = '\0';
		lineno++;
		line = trim(line);
		if (*line == '\0' || *line == '#' || *line == '!')
		{
			line = next;
			continue;
		}
		eq = strchr(line, '=');
		if (eq == NULL)
		{
			file->error = psprintf("line %d of oms.kafka_config_file \"%s\" is not of the form property=value",
								   lineno, file->path);
			return;
		}
		*eq = '\0';
		name = trim(line);
		if (!oms_kafka_valid_property_name(name))
		{
			file->error = psprintf("line %d of oms.kafka_config_file \"%s\" has no valid property name "
								   "(property=value, the name made of letters, digits, \".\", \"_\" and \"-\")",
								   lineno, file->path);
			return;
		}
		if (file->nprops == room)
		{
			room *= 2;
			file->props = repalloc(file->props, sizeof(OmsKafkaProperty) * room);
		}
		file->props[file->nprops].name = name;
		file->props[file->nprops].value = trim(eq + 1);
		file->props[file->nprops].line = lineno;
		file->nprops++;
		line = next;
	}
}

/* Reads and parses the file the setting names now; errors end up in ->error. */
static OmsKafkaFile *
load_file(void)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext,
											  "oms kafka config file",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	OmsKafkaFile *file = palloc0(sizeof(OmsKafkaFile));

	file->cxt = cxt;
	if (oms_kafka_config_file != NULL && oms_kafka_config_file[0] != '\0')
	{
		file->path = file_path(oms_kafka_config_file);
		read_file(file);
		if (file->error == NULL)
			parse_file(file);
	}
	MemoryContextSwitchTo(oldcxt);
	return file;
}

/* Wipes what was read before the memory goes back to the allocator. */
static void
free_file(OmsKafkaFile *file)
{
	if (file->content != NULL)
		explicit_bzero(file->content, file->content_len);
	if (file->parsed != NULL)
		explicit_bzero(file->parsed, file->content_len);
	MemoryContextDelete(file->cxt);
}

/* Same path, same outcome, same bytes: nothing for the clients to rebuild. */
static bool
same_file(const OmsKafkaFile *a, const OmsKafkaFile *b)
{
	if ((a->path == NULL) != (b->path == NULL) ||
		(a->path != NULL && strcmp(a->path, b->path) != 0))
		return false;
	if ((a->error == NULL) != (b->error == NULL) ||
		(a->error != NULL && strcmp(a->error, b->error) != 0))
		return false;
	return a->content_len == b->content_len &&
		(a->content_len == 0 || memcmp(a->content, b->content, a->content_len) == 0);
}

/*
 * Called by the worker after it processed a reload: the file is read
 * again before the next client is built or compared, even when the
 * setting did not change (the file's content may have).
 */
void
oms_kafka_file_reloaded(void)
{
	file_stale = true;
}

static void
link_file(OmsKafkaFile *file)
{
	file->next = live_files;
	live_files = file;
}

static void
unlink_file(OmsKafkaFile *file)
{
	for (OmsKafkaFile **p = &live_files; *p != NULL; p = &(*p)->next)
	{
		if (*p == file)
		{
			*p = file->next;
			return;
		}
	}
}

/* Rereads the file after a reload; a new generation only when something changed. */
static void
refresh_file(void)
{
	OmsKafkaFile *file;

	if (!file_stale && current_file != NULL)
		return;
	file_stale = false;

	file = load_file();
	if (current_file != NULL && same_file(file, current_file))
	{
		free_file(file);
		return;
	}
	file->generation = ++file_generation;
	file->refcount = 1;			/* the reference of current_file */
	link_file(file);
	if (current_file != NULL)
		oms_kafka_file_release(current_file);
	current_file = file;
}

/*
 * The generation of the current file: a client built from another
 * generation must be rebuilt.  Reads the file after a reload.
 */
uint64
oms_kafka_file_generation(void)
{
	refresh_file();
	return current_file->generation;
}

/*
 * The current file, for a client being built, which keeps it (and so its
 * values are still redacted) until it is destroyed: then
 * oms_kafka_file_release().
 */
OmsKafkaFile *
oms_kafka_file_acquire(void)
{
	refresh_file();
	current_file->refcount++;
	return current_file;
}

void
oms_kafka_file_release(OmsKafkaFile *file)
{
	if (file == NULL)
		return;
	Assert(file->refcount > 0);
	if (--file->refcount > 0)
		return;
	unlink_file(file);
	free_file(file);
}

/* ---------------------------------------------------------------- redaction */

/* Marks every occurrence of needle[0..len) in text[0..textlen). */
static void
mark_occurrences(const char *text, size_t textlen, const char *needle, size_t len, bool *mask)
{
	const char *p = text;
	const char *end = text + textlen;

	while ((size_t) (end - p) >= len)
	{
		const char *hit = memchr(p, needle[0], end - p - len + 1);

		if (hit == NULL)
			return;
		if (memcmp(hit, needle, len) == 0)
			memset(mask + (hit - text), true, len);
		p = hit + 1;
	}
}

/* Marks what text shows of one secret value: all of it, or runs of REDACT_WINDOW characters. */
static void
mark_secret(const char *text, size_t textlen, const char *value, bool *mask)
{
	size_t		len = strlen(value);
	size_t		window = Min(len, REDACT_WINDOW);

	/* cppcheck-suppress knownConditionTrueFalse ; wrong: false only for "" */
	for (size_t start = 0; window > 0 && start + window <= len; start++)
		mark_occurrences(text, textlen, value + start, window, mask);
}

/*
 * Replaces in "text" (NUL-terminated, in a buffer of "size" bytes)
 * whatever it shows of the value of a secret property of a file in use
 * with "[redacted]"; the result is cut to fit.  Allocates nothing, so it
 * may run in librdkafka callbacks (on the worker's thread).
 */
void
oms_kafka_redact(char *text, size_t size)
{
	bool		mask[REDACT_MAX];
	char		out[REDACT_MAX];
	size_t		textlen;
	size_t		o = 0;
	bool		found = false;

	if (text == NULL || size == 0)
		return;
	textlen = strnlen(text, Min(size, REDACT_MAX) - 1);
	text[textlen] = '\0';
	memset(mask, false, textlen);

	for (OmsKafkaFile *file = live_files; file != NULL; file = file->next)
	{
		for (int i = 0; i < file->nprops; i++)
		{
			if (file->props[i].value[0] != '\0' &&
				oms_kafka_is_secret_property(file->props[i].name))
				mark_secret(text, textlen, file->props[i].value, mask);
		}
	}

	for (size_t i = 0; i < textlen; i++)
		found |= mask[i];
	if (!found)
		return;

	for (size_t i = 0; i < textlen && o + 1 < sizeof(out); i++)
	{
		if (!mask[i])
			out[o++] = text[i];
		else if (i == 0 || !mask[i - 1])
		{
			size_t		n = Min(strlen("[redacted]"), sizeof(out) - 1 - o);

			memcpy(out + o, "[redacted]", n);
			o += n;
		}
	}
	out[o] = '\0';
	strlcpy(text, out, Min(size, REDACT_MAX));
}
