/*
 * mockbroker -- host a librdkafka mock Kafka cluster for the oms tests.
 *
 * The mock cluster is a real Kafka wire-protocol server (produce, fetch,
 * idempotent/transactional producers, consumer groups) that librdkafka can
 * run inside any rd_kafka_t.  This program creates a producer handle only to
 * own such a cluster, prints the bootstrap list and then takes fault
 * injection commands, one per line, from stdin and/or a control FIFO.
 *
 * Usage:
 *   mockbroker [--brokers N] [--partitions N] [--topic NAME]...
 *              [--control FIFO] [--port-file PATH] [--exit-with-parent]
 *              [--debug CONTEXTS] [-X prop=value]...
 *
 * First stdout line:  BOOTSTRAP 127.0.0.1:port[,127.0.0.1:port...]
 * Every command gets exactly one reply line, "OK ..." or "ERR ...".  A
 * command whose last word is "#tag" gets " #tag" appended to its reply so a
 * script can pick its own answer out of the shared output.  Run with "help"
 * for the command list.
 *
 * PostgreSQL independent; plain C99 plus POSIX.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64
#define MAX_PROPS 32
#define LINE_MAX_LEN 4096
#define MAX_ERRORS_PER_CMD 1000

/* ------------------------------------------------------------------ */
/* Name tables                                                         */
/* ------------------------------------------------------------------ */

struct api_name
{
	const char *name;
	int16_t		key;
};

/* Kafka protocol request types (ApiKey) most likely to matter in tests. */
static const struct api_name api_names[] = {
	{"Produce", 0},
	{"Fetch", 1},
	{"ListOffsets", 2},
	{"Metadata", 3},
	{"OffsetCommit", 8},
	{"OffsetFetch", 9},
	{"FindCoordinator", 10},
	{"JoinGroup", 11},
	{"Heartbeat", 12},
	{"LeaveGroup", 13},
	{"SyncGroup", 14},
	{"DescribeGroups", 15},
	{"ListGroups", 16},
	{"SaslHandshake", 17},
	{"ApiVersions", 18},
	{"CreateTopics", 19},
	{"DeleteTopics", 20},
	{"InitProducerId", 22},
	{"OffsetForLeaderEpoch", 23},
	{"AddPartitionsToTxn", 24},
	{"AddOffsetsToTxn", 25},
	{"EndTxn", 26},
	{"TxnOffsetCommit", 28},
	{NULL, 0}
};

struct err_alias
{
	const char *name;
	rd_kafka_resp_err_t err;
};

/*
 * Apache Kafka spells some errors differently from librdkafka; accept both.
 * Everything else is looked up in librdkafka's own error table.
 */
static const struct err_alias err_aliases[] = {
	{"MESSAGE_TOO_LARGE", RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE},
	{"CORRUPT_MESSAGE", RD_KAFKA_RESP_ERR_INVALID_MSG},
	{"INVALID_FETCH_SIZE", RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE},
	{"NOT_LEADER_OR_FOLLOWER", RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION},
	{"UNKNOWN_TOPIC_OR_PARTITION", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART},
	{"DISCONNECT", RD_KAFKA_RESP_ERR__TRANSPORT},
	{"TRANSPORT", RD_KAFKA_RESP_ERR__TRANSPORT},
	{NULL, RD_KAFKA_RESP_ERR_NO_ERROR}
};

/* ------------------------------------------------------------------ */
/* Global state                                                        */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t got_signal = 0;
static int	sig_pipe[2] = {-1, -1};

static rd_kafka_t *host_rk = NULL;
static rd_kafka_mock_cluster_t *mcluster = NULL;
static int	broker_cnt = 1;
static int	default_partitions = 4;	/* same as the mock's auto-create */

static void
on_signal(int signo)
{
	int			saved = errno;
	char		c = 1;

	got_signal = signo;
	if (sig_pipe[1] >= 0)
	{
		/* the pipe is non-blocking: if it is full we are waking up anyway */
		ssize_t		rc = write(sig_pipe[1], &c, 1);

		(void) rc;
	}
	errno = saved;
}

/*
 * librdkafka log lines of the host handle go to stderr.  The warning that
 * the host handle has no bootstrap.servers is expected (it never connects
 * anywhere) and dropped.
 */
static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void) rk;
	if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers"))
		return;
	fprintf(stderr, "mockbroker: rdkafka %d %s: %s\n", level, fac, buf);
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static void
die(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "mockbroker: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* Parse a whole string as a long within [lo, hi]; returns 0 on success. */
static int
parse_long(const char *s, long lo, long hi, long *out)
{
	char	   *end;
	long		v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int
set_nonblock_cloexec(int fd)
{
	int			fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	fl = fcntl(fd, F_GETFD);
	if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
		return -1;
	return 0;
}

static int
lookup_api(const char *s, int16_t *key)
{
	long		v;
	int			i;

	if (parse_long(s, 0, 32767, &v) == 0)
	{
		*key = (int16_t) v;
		return 0;
	}
	for (i = 0; api_names[i].name; i++)
	{
		if (strcasecmp(api_names[i].name, s) == 0 ||
			/* also accept "ProduceRequest" style */
			(strncasecmp(api_names[i].name, s, strlen(api_names[i].name)) == 0 &&
			 strcasecmp(s + strlen(api_names[i].name), "Request") == 0))
		{
			*key = api_names[i].key;
			return 0;
		}
	}
	return -1;
}

static int
lookup_error(const char *s, rd_kafka_resp_err_t *err)
{
	const struct rd_kafka_err_desc *descs;
	size_t		ndescs,
				i;
	long		v;

	if (parse_long(s, -1000, 1000, &v) == 0)
	{
		*err = (rd_kafka_resp_err_t) v;
		return 0;
	}
	/* tolerate the C enum prefix */
	if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
		s += 18;
	else if (strncasecmp(s, "ERR_", 4) == 0)
		s += 4;

	for (i = 0; err_aliases[i].name; i++)
	{
		if (strcasecmp(err_aliases[i].name, s) == 0)
		{
			*err = err_aliases[i].err;
			return 0;
		}
	}
	rd_kafka_get_err_descs(&descs, &ndescs);
	for (i = 0; i < ndescs; i++)
	{
		if (descs[i].name && strcasecmp(descs[i].name, s) == 0)
		{
			*err = descs[i].code;
			return 0;
		}
	}
	return -1;
}

/* "all" or -1 means every broker; otherwise 1..broker_cnt. */
static int
parse_broker(const char *s, int32_t *id)
{
	long		v;

	if (s && strcasecmp(s, "all") == 0)
	{
		*id = -1;
		return 0;
	}
	if (parse_long(s, -1, INT32_MAX, &v) != 0)
		return -1;
	if (v != -1 && (v < 1 || v > broker_cnt))
		return -1;
	*id = (int32_t) v;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Command execution                                                   */
/* ------------------------------------------------------------------ */

static void
reply(const char *tag, const char *status, const char *fmt,...)
{
	va_list		ap;

	fputs(status, stdout);
	if (fmt && *fmt)
	{
		fputc(' ', stdout);
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	if (tag)
		printf(" #%s", tag);
	fputc('\n', stdout);
	fflush(stdout);
}

#define OKR(...) reply(tag, "OK", __VA_ARGS__)
#define ERRR(...) reply(tag, "ERR", __VA_ARGS__)

static const char *help_text =
"commands: down <id|all> | up <id|all> | rtt <id|all> <ms> | "
"error <Api|ApiKey> <Err|code> [count] | clear <Api|ApiKey> | "
"create <topic> [partitions] | leader <topic> <partition> <id|-1> | "
"bootstrap | ping | help | quit   (append \" #tag\" to tag the reply)";

/*
 * Execute one command line.  Returns 1 if the program should stop.
 */
static int
run_command(char *line)
{
	char	   *argv[8];
	int			argc = 0;
	char	   *tok,
			   *save = NULL;
	const char *tag = NULL;
	const char *cmd;
	rd_kafka_resp_err_t err;
	int32_t		bid;
	long		v;

	for (tok = strtok_r(line, " \t\r", &save); tok;
		 tok = strtok_r(NULL, " \t\r", &save))
	{
		if (argc == (int) (sizeof(argv) / sizeof(argv[0])))
		{
			ERRR("too many arguments");
			return 0;
		}
		argv[argc++] = tok;
	}
	if (argc > 0 && argv[argc - 1][0] == '#')
	{
		tag = argv[argc - 1] + 1;
		argc--;
	}
	if (argc == 0)
	{
		if (tag)
			ERRR("empty command");
		return 0;				/* blank line: ignore silently */
	}
	cmd = argv[0];

	if (strcasecmp(cmd, "down") == 0 || strcasecmp(cmd, "up") == 0)
	{
		int			down = (cmd[0] == 'd' || cmd[0] == 'D');

		if (argc != 2 || parse_broker(argv[1], &bid) != 0)
		{
			ERRR("usage: %s <broker_id 1..%d|all>", down ? "down" : "up",
				 broker_cnt);
			return 0;
		}
		err = down ? rd_kafka_mock_broker_set_down(mcluster, bid)
			: rd_kafka_mock_broker_set_up(mcluster, bid);
		if (err)
			ERRR("%s %s: %s", cmd, argv[1], rd_kafka_err2str(err));
		else
			OKR("%s %s", down ? "down" : "up", argv[1]);
	}
	else if (strcasecmp(cmd, "rtt") == 0)
	{
		if (argc != 3 || parse_broker(argv[1], &bid) != 0 ||
			parse_long(argv[2], 0, 3600 * 1000, &v) != 0)
		{
			ERRR("usage: rtt <broker_id 1..%d|all> <ms>", broker_cnt);
			return 0;
		}
		err = rd_kafka_mock_broker_set_rtt(mcluster, bid, (int) v);
		if (err)
			ERRR("rtt: %s", rd_kafka_err2str(err));
		else
			OKR("rtt %s %ld", argv[1], v);
	}
	else if (strcasecmp(cmd, "error") == 0)
	{
		int16_t		api;
		rd_kafka_resp_err_t code;
		long		count = 1;
		rd_kafka_resp_err_t *errs;
		long		i;

		if (argc < 3 || argc > 4)
		{
			ERRR("usage: error <ApiName|ApiKey> <ErrName|code> [count]");
			return 0;
		}
		if (lookup_api(argv[1], &api) != 0)
		{
			ERRR("unknown api '%s'", argv[1]);
			return 0;
		}
		if (lookup_error(argv[2], &code) != 0)
		{
			ERRR("unknown error '%s'", argv[2]);
			return 0;
		}
		if (argc == 4 &&
			parse_long(argv[3], 1, MAX_ERRORS_PER_CMD, &count) != 0)
		{
			ERRR("count must be 1..%d", MAX_ERRORS_PER_CMD);
			return 0;
		}
		errs = malloc(sizeof(*errs) * (size_t) count);
		if (!errs)
		{
			ERRR("out of memory");
			return 0;
		}
		for (i = 0; i < count; i++)
			errs[i] = code;
		rd_kafka_mock_push_request_errors_array(mcluster, api, (size_t) count,
												errs);
		free(errs);
		OKR("error api=%d err=%d(%s) count=%ld", (int) api, (int) code,
			rd_kafka_err2name(code), count);
	}
	else if (strcasecmp(cmd, "clear") == 0)
	{
		int16_t		api;

		if (argc != 2 || lookup_api(argv[1], &api) != 0)
		{
			ERRR("usage: clear <ApiName|ApiKey>");
			return 0;
		}
		rd_kafka_mock_clear_request_errors(mcluster, api);
		OKR("clear api=%d", (int) api);
	}
	else if (strcasecmp(cmd, "create") == 0)
	{
		long		parts = default_partitions;

		if (argc < 2 || argc > 3 ||
			(argc == 3 && parse_long(argv[2], 1, 100000, &parts) != 0))
		{
			ERRR("usage: create <topic> [partitions]");
			return 0;
		}
		err = rd_kafka_mock_topic_create(mcluster, argv[1], (int) parts, 1);
		if (err)
			ERRR("create %s: %s", argv[1], rd_kafka_err2name(err));
		else
			OKR("create %s %ld", argv[1], parts);
	}
	else if (strcasecmp(cmd, "leader") == 0)
	{
		long		part;

		if (argc != 4 || parse_long(argv[2], 0, INT32_MAX, &part) != 0 ||
			parse_broker(argv[3], &bid) != 0)
		{
			ERRR("usage: leader <topic> <partition> <broker_id|-1>");
			return 0;
		}
		err = rd_kafka_mock_partition_set_leader(mcluster, argv[1],
												 (int32_t) part, bid);
		if (err)
			ERRR("leader: %s", rd_kafka_err2str(err));
		else
			OKR("leader %s %ld %d", argv[1], part, (int) bid);
	}
	else if (strcasecmp(cmd, "bootstrap") == 0)
		OKR("%s", rd_kafka_mock_cluster_bootstraps(mcluster));
	else if (strcasecmp(cmd, "ping") == 0)
		OKR("pong");
	else if (strcasecmp(cmd, "help") == 0)
		OKR("%s", help_text);
	else if (strcasecmp(cmd, "quit") == 0 || strcasecmp(cmd, "exit") == 0)
	{
		OKR("bye");
		return 1;
	}
	else
		ERRR("unknown command '%s' (try help)", cmd);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Line-oriented input sources                                          */
/* ------------------------------------------------------------------ */

struct source
{
	int			fd;
	size_t		len;
	int			overflow;		/* discarding the rest of an overlong line */
	char		buf[LINE_MAX_LEN];
};

/*
 * Read what is available on src and execute complete lines.
 * Returns: 1 quit requested, 0 keep going, -1 EOF, -2 read error.
 */
static int
source_read(struct source *src)
{
	char		tmp[LINE_MAX_LEN];
	ssize_t		n;
	ssize_t		i;

	n = read(src->fd, tmp, sizeof(tmp));
	if (n == 0)
		return -1;
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -2;

	for (i = 0; i < n; i++)
	{
		if (tmp[i] == '\n')
		{
			if (src->overflow)
			{
				reply(NULL, "ERR", "line too long");
				src->overflow = 0;
			}
			else
			{
				src->buf[src->len] = '\0';
				if (run_command(src->buf))
					return 1;
			}
			src->len = 0;
		}
		else if (src->overflow)
			continue;
		else if (src->len + 1 >= sizeof(src->buf))
		{
			src->overflow = 1;
			src->len = 0;
		}
		else
			src->buf[src->len++] = tmp[i];
	}
	return 0;
}

/*
 * The control FIFO.  We keep a write descriptor of our own open, so the
 * read side never sees end-of-file when a client closes: clients may open,
 * write a line and close as often as they like, with no window in which the
 * pipe has no reader (which would lose data or block writers).  Should EOF
 * happen anyway, fifo_reopen() opens a fresh read end before closing the
 * old one for the same reason.
 */
static int	fifo_wfd = -1;

static int
fifo_open_read(const char *path)
{
	int			fd = open(path, O_RDONLY | O_NONBLOCK);

	if (fd >= 0 && set_nonblock_cloexec(fd) != 0)
	{
		close(fd);
		return -1;
	}
	return fd;
}

static void
fifo_reopen(struct source *src, const char *path)
{
	int			fd = fifo_open_read(path);

	if (fd < 0)
		die("cannot reopen control fifo %s: %s", path, strerror(errno));
	close(src->fd);
	src->fd = fd;
	src->len = 0;
	src->overflow = 0;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void
usage(FILE *out)
{
	fprintf(out,
			"usage: mockbroker [--brokers N] [--partitions N] [--topic NAME]...\n"
			"                  [--control FIFO] [--port-file PATH] [--exit-with-parent]\n"
			"                  [--debug CONTEXTS] [-X prop=value]...\n"
			"  --brokers N        number of mock brokers, ids 1..N (default 1)\n"
			"  --partitions N     partitions for --topic and 'create' without a count\n"
			"                     (default 4; topics auto-created by clients always get 4)\n"
			"  --topic NAME       pre-create topic NAME (repeatable), replication 1\n"
			"  --control FIFO     also read commands from FIFO (created if missing);\n"
			"                     stdin EOF is then ignored instead of meaning quit\n"
			"  --port-file PATH   write the bootstrap list to PATH (atomically)\n"
			"  --exit-with-parent terminate when the parent process dies (Linux)\n"
			"  --debug CONTEXTS   librdkafka debug contexts for the host handle, e.g. mock\n"
			"  -X prop=value      extra librdkafka property for the host handle\n"
			"first stdout line: BOOTSTRAP host:port[,host:port...]\n%s\n",
			help_text);
}

static int
write_port_file(const char *path, const char *bootstraps)
{
	char		tmp[PATH_MAX];
	FILE	   *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long) getpid()) >=
		(int) sizeof(tmp))
		return -1;
	f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "%s\n", bootstraps);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
	{
		unlink(tmp);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *topics[MAX_TOPICS];
	int			ntopics = 0;
	const char *props[MAX_PROPS];
	int			nprops = 0;
	const char *control_path = NULL;
	const char *port_file = NULL;
	const char *debug = NULL;
	int			exit_with_parent = 0;
	int			created_fifo = 0;
	char		errstr[512];
	rd_kafka_conf_t *conf;
	struct source in_src,
				fifo_src;
	int			stdin_open = 1;
	int			quit = 0;
	int			i;
	long		v;
	struct sigaction sa;
	const char *bootstraps;

	for (i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *val = (i + 1 < argc) ? argv[i + 1] : NULL;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
		{
			usage(stdout);
			return 0;
		}
		else if (strcmp(a, "--exit-with-parent") == 0)
		{
			exit_with_parent = 1;
			continue;
		}
		if (!val)
			die("option %s needs a value (see --help)", a);
		i++;
		if (strcmp(a, "--brokers") == 0)
		{
			if (parse_long(val, 1, 64, &v) != 0)
				die("--brokers must be 1..64");
			broker_cnt = (int) v;
		}
		else if (strcmp(a, "--partitions") == 0)
		{
			if (parse_long(val, 1, 100000, &v) != 0)
				die("--partitions must be 1..100000");
			default_partitions = (int) v;
		}
		else if (strcmp(a, "--topic") == 0)
		{
			if (ntopics == MAX_TOPICS)
				die("too many --topic options");
			topics[ntopics++] = val;
		}
		else if (strcmp(a, "--control") == 0)
			control_path = val;
		else if (strcmp(a, "--port-file") == 0)
			port_file = val;
		else if (strcmp(a, "--debug") == 0)
			debug = val;
		else if (strcmp(a, "-X") == 0)
		{
			if (nprops == MAX_PROPS || !strchr(val, '='))
				die("-X expects prop=value (at most %d)", MAX_PROPS);
			props[nprops++] = val;
		}
		else
			die("unknown option %s (see --help)", a);
	}

#if defined(__linux__)
	if (exit_with_parent)
	{
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
			die("prctl(PR_SET_PDEATHSIG): %s", strerror(errno));
		if (getppid() == 1)		/* parent already gone */
			return 1;
	}
#else
	if (exit_with_parent)
		fprintf(stderr, "mockbroker: --exit-with-parent unsupported here\n");
#endif

	/* Signals: a self-pipe wakes the poll loop. */
	if (pipe(sig_pipe) != 0 || set_nonblock_cloexec(sig_pipe[0]) != 0 ||
		set_nonblock_cloexec(sig_pipe[1]) != 0)
		die("pipe: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	/* Control FIFO before the cluster, so a bad path fails fast. */
	if (control_path)
	{
		struct stat st;

		if (stat(control_path, &st) == 0)
		{
			if (!S_ISFIFO(st.st_mode))
				die("%s exists and is not a FIFO", control_path);
		}
		else if (errno == ENOENT)
		{
			if (mkfifo(control_path, 0600) != 0)
				die("mkfifo %s: %s", control_path, strerror(errno));
			created_fifo = 1;
		}
		else
			die("stat %s: %s", control_path, strerror(errno));

		fifo_src.fd = fifo_open_read(control_path);
		if (fifo_src.fd < 0)
			die("open %s: %s", control_path, strerror(errno));
		/* our own writer: see comment above fifo_open_read() */
		fifo_wfd = open(control_path, O_WRONLY | O_NONBLOCK);
		if (fifo_wfd < 0 || set_nonblock_cloexec(fifo_wfd) != 0)
			die("open %s for writing: %s", control_path, strerror(errno));
		fifo_src.len = 0;
		fifo_src.overflow = 0;
	}

	/* Host handle: a producer that never produces. */
	conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, log_cb);
	if (debug && rd_kafka_conf_set(conf, "debug", debug, errstr,
								   sizeof(errstr)) != RD_KAFKA_CONF_OK)
		die("debug: %s", errstr);
	for (i = 0; i < nprops; i++)
	{
		char		name[256];
		const char *eq = strchr(props[i], '=');
		size_t		nlen = (size_t) (eq - props[i]);

		if (nlen >= sizeof(name))
			die("property name too long");
		memcpy(name, props[i], nlen);
		name[nlen] = '\0';
		if (rd_kafka_conf_set(conf, name, eq + 1, errstr, sizeof(errstr)) !=
			RD_KAFKA_CONF_OK)
			die("-X %s: %s", props[i], errstr);
	}
	host_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!host_rk)
		die("rd_kafka_new: %s", errstr);

	mcluster = rd_kafka_mock_cluster_new(host_rk, broker_cnt);
	if (!mcluster)
	{
		rd_kafka_destroy(host_rk);
		die("rd_kafka_mock_cluster_new failed (see log above)");
	}

	for (i = 0; i < ntopics; i++)
	{
		rd_kafka_resp_err_t err =
			rd_kafka_mock_topic_create(mcluster, topics[i],
									   default_partitions, 1);

		if (err)
		{
			fprintf(stderr, "mockbroker: create topic %s: %s\n", topics[i],
					rd_kafka_err2name(err));
			rd_kafka_mock_cluster_destroy(mcluster);
			rd_kafka_destroy(host_rk);
			return 2;
		}
	}

	bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
	if (port_file && write_port_file(port_file, bootstraps) != 0)
		fprintf(stderr, "mockbroker: cannot write %s: %s\n", port_file,
				strerror(errno));
	printf("BOOTSTRAP %s\n", bootstraps);
	fflush(stdout);

	in_src.fd = STDIN_FILENO;
	in_src.len = 0;
	in_src.overflow = 0;

	while (!quit && !got_signal)
	{
		struct pollfd pfd[3];
		int			n = 0,
					in_idx = -1,
					fifo_idx = -1,
					rc;

		pfd[n].fd = sig_pipe[0];
		pfd[n].events = POLLIN;
		n++;
		if (stdin_open)
		{
			in_idx = n;
			pfd[n].fd = in_src.fd;
			pfd[n].events = POLLIN;
			n++;
		}
		if (control_path)
		{
			fifo_idx = n;
			pfd[n].fd = fifo_src.fd;
			pfd[n].events = POLLIN;
			n++;
		}
		for (i = 0; i < n; i++)
			pfd[i].revents = 0;

		rc = poll(pfd, (nfds_t) n, -1);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if (pfd[0].revents)
			break;				/* signal */

		if (in_idx >= 0 && pfd[in_idx].revents)
		{
			rc = source_read(&in_src);
			if (rc == 1)
				quit = 1;
			else if (rc < 0)
			{
				stdin_open = 0;
				/* without a control fifo stdin EOF means quit */
				if (!control_path)
					quit = 1;
			}
		}
		if (!quit && fifo_idx >= 0 && pfd[fifo_idx].revents)
		{
			rc = source_read(&fifo_src);
			if (rc == 1)
				quit = 1;
			else if (rc == -1 ||
					 (rc == 0 && (pfd[fifo_idx].revents & POLLHUP) &&
					  !(pfd[fifo_idx].revents & POLLIN)))
				fifo_reopen(&fifo_src, control_path);
			else if (rc == -2)
				die("read %s: %s", control_path, strerror(errno));
		}
	}

	if (got_signal)
		fprintf(stderr, "mockbroker: signal %d, shutting down\n",
				(int) got_signal);

	rd_kafka_mock_cluster_destroy(mcluster);
	rd_kafka_destroy(host_rk);

	if (control_path)
	{
		close(fifo_src.fd);
		close(fifo_wfd);
		if (created_fifo)
			unlink(control_path);
	}
	if (port_file)
		unlink(port_file);
	return 0;
}
