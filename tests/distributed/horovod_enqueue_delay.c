/* Test-only fault injector, LD_PRELOADed into Horovod ranks: every thread leaving Horovod's tensor queue
 * (the mutex unlock at the end of TensorQueue::AddToTensorQueue / AddToTensorQueueMulti) sleeps
 * GF_ENQUEUE_DELAY_US microseconds. That is where a preempted engine thread sits in the race that
 * gluonface.parallel.horovod_ops explains: broadcast logs its op name after this point, allreduce before.
 * Horovod's own calls to pthread_mutex_unlock go through the PLT, so this definition takes them; the return
 * address says whether the call came from one of the two queue functions (their extents from the ELF
 * symbol table of the loaded library). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *QUEUE_FUNCS[] = {
    "_ZN7horovod6common11TensorQueue16AddToTensorQueueERNS0_16TensorTableEntryERNS0_7RequestE",
    "_ZN7horovod6common11TensorQueue21AddToTensorQueueMultiERSt6vectorINS0_16TensorTableEntryESaIS3_EERS2_INS0_"
    "7RequestESaIS7_EE",
};
static uintptr_t lo[2], hi[2];
static int resolved;

static int find_horovod(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size; (void)data;
  if (!strstr(info->dlpi_name, "horovod/mxnet/mpi_lib")) return 0;
  void *lib = dlopen(info->dlpi_name, RTLD_NOLOAD | RTLD_NOW);
  if (!lib) return 0;
  for (int i = 0; i < 2; ++i) {
    void *f = dlsym(lib, QUEUE_FUNCS[i]);
    Dl_info where;
    const ElfW(Sym) *sym = NULL;
    if (f && dladdr1(f, &where, (void **)&sym, RTLD_DL_SYMENT) && sym) {
      lo[i] = (uintptr_t)f;
      hi[i] = lo[i] + sym->st_size;
    }
  }
  resolved = lo[0] && lo[1];
  return 1;
}

int pthread_mutex_unlock(pthread_mutex_t *mutex) {
  static int (*real_unlock)(pthread_mutex_t *);
  if (!real_unlock) real_unlock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_unlock");
  int rc = real_unlock(mutex);
  uintptr_t from = (uintptr_t)__builtin_return_address(0);
  static unsigned calls;
  if (!resolved && (__atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED) & 255) == 0)
    dl_iterate_phdr(find_horovod, NULL);   /* not on every unlock: the process unlocks often */
  for (int i = 0; resolved && i < 2; ++i) {
    if (from >= lo[i] && from < hi[i]) {
      const char *us = getenv("GF_ENQUEUE_DELAY_US");
      usleep(us ? (useconds_t)atoi(us) : 20000);
      if (getenv("GF_ENQUEUE_DELAY_MARK")) {
        static const char mark[] = "gf-enqueue-delay\n";
        ssize_t written = write(2, mark, sizeof mark - 1);   /* warn_unused_result under _FORTIFY_SOURCE */
        (void)written;
      }
    }
  }
  return rc;
}
