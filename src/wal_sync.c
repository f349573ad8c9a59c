/*
 * wal_sync — see wal_sync.h.
 *
 * One thread, one mutex: the event loop only ever takes the mutex for a
 * few instructions (to post a request or read the result), the thread
 * holds it only between syncs.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "log.h"
#include "util.h"
#include "wal_sync.h"

struct wal_sync {
	char           *path;
	int             wal_fd;
	int             event_fd;
	pthread_t       thread;
	pthread_mutex_t lock;
	pthread_cond_t  wake;        /* a request, or stop */
	pthread_cond_t  synced;      /* done_seq moved */
	uint64_t        requested_seq;
	uint64_t        done_seq;
	bool            stopping;
	unsigned long long syncs;     /* statistics */
	uint64_t        sync_us;
};

/*
 * The WAL file must be the one SQLite writes: it keeps one inode while
 * any connection is open (ours always is), but check, since syncing a
 * stale inode would silently lose durability.
 */
static void
wal_open_current(struct wal_sync *ws)
{
	struct stat path_st, fd_st;

	if (stat(ws->path, &path_st) < 0)
		fatal("wal_sync: stat %s", ws->path);
	if (ws->wal_fd >= 0 && fstat(ws->wal_fd, &fd_st) == 0 &&
	    fd_st.st_ino == path_st.st_ino && fd_st.st_dev == path_st.st_dev)
		return;
	if (ws->wal_fd >= 0)
		close(ws->wal_fd);
	ws->wal_fd = open(ws->path, O_RDONLY | O_CLOEXEC);
	if (ws->wal_fd < 0)
		fatal("wal_sync: open %s", ws->path);
}

static void *
wal_sync_thread(void *arg)
{
	struct wal_sync *ws = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&ws->lock);
	for (;;) {
		while (ws->requested_seq == ws->done_seq && !ws->stopping)
			pthread_cond_wait(&ws->wake, &ws->lock);
		if (ws->requested_seq == ws->done_seq && ws->stopping)
			break;
		uint64_t target = ws->requested_seq;
		pthread_mutex_unlock(&ws->lock);

		uint64_t started = monotonic_us();
		wal_open_current(ws);
		if (fdatasync(ws->wal_fd) < 0)
			fatal("wal_sync: fdatasync %s: not acknowledging anything",
			    ws->path);

		pthread_mutex_lock(&ws->lock);
		ws->syncs++;
		ws->sync_us += monotonic_us() - started;
		ws->done_seq = target;
		pthread_cond_broadcast(&ws->synced);
		if (write(ws->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			fatal("wal_sync: eventfd");
	}
	pthread_mutex_unlock(&ws->lock);
	return NULL;
}

struct wal_sync *
wal_sync_new(const char *wal_path)
{
	struct wal_sync *ws = xcalloc(1, sizeof(*ws));

	ws->path = xstrdup(wal_path);
	ws->wal_fd = -1;
	ws->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ws->event_fd < 0)
		fatal("eventfd");
	pthread_mutex_init(&ws->lock, NULL);
	pthread_cond_init(&ws->wake, NULL);
	pthread_cond_init(&ws->synced, NULL);
	if (pthread_create(&ws->thread, NULL, wal_sync_thread, ws) != 0)
		fatalx("wal_sync: cannot start the sync thread");
	return ws;
}

void
wal_sync_free(struct wal_sync *ws)
{
	if (ws == NULL)
		return;
	pthread_mutex_lock(&ws->lock);
	ws->stopping = true;
	pthread_cond_signal(&ws->wake);
	pthread_mutex_unlock(&ws->lock);
	pthread_join(ws->thread, NULL);
	if (ws->wal_fd >= 0)
		close(ws->wal_fd);
	close(ws->event_fd);
	pthread_mutex_destroy(&ws->lock);
	pthread_cond_destroy(&ws->wake);
	pthread_cond_destroy(&ws->synced);
	free(ws->path);
	free(ws);
}

int
wal_sync_fd(const struct wal_sync *ws)
{
	return ws->event_fd;
}

void
wal_sync_request(struct wal_sync *ws, uint64_t seq)
{
	pthread_mutex_lock(&ws->lock);
	if (seq > ws->requested_seq) {
		ws->requested_seq = seq;
		pthread_cond_signal(&ws->wake);
	}
	pthread_mutex_unlock(&ws->lock);
}

uint64_t
wal_sync_done(struct wal_sync *ws)
{
	uint64_t count, done;

	if (read(ws->event_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		fatal("wal_sync: eventfd read");
	pthread_mutex_lock(&ws->lock);
	done = ws->done_seq;
	pthread_mutex_unlock(&ws->lock);
	return done;
}

void
wal_sync_stats(struct wal_sync *ws, unsigned long long *syncs, double *mean_us)
{
	pthread_mutex_lock(&ws->lock);
	*syncs = ws->syncs;
	*mean_us = ws->syncs ? (double)ws->sync_us / (double)ws->syncs : 0.0;
	pthread_mutex_unlock(&ws->lock);
}

void
wal_sync_wait(struct wal_sync *ws)
{
	pthread_mutex_lock(&ws->lock);
	while (ws->done_seq < ws->requested_seq)
		pthread_cond_wait(&ws->synced, &ws->lock);
	pthread_mutex_unlock(&ws->lock);
}
