/*
 * pfndemo-touch [PAGES]: maps /dev/pfndemo (xtask/testdata/pfndemo) shared, writes every page
 * and reads it back: one fault and one vmf_insert_pfn per page. Link it statically
 * (`cc -static`): the test box's busybox guest has no libc.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long pages = argc > 1 ? atol(argv[1]) : 8;
	long ps = sysconf(_SC_PAGESIZE);
	int fd = open("/dev/pfndemo", O_RDWR);
	volatile unsigned int *p;
	long i;

	if (fd < 0) {
		perror("pfndemo-touch: open /dev/pfndemo");
		return 1;
	}
	p = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("pfndemo-touch: mmap");
		return 1;
	}
	for (i = 0; i < pages; i++)
		p[i * ps / 4] = 0x5a5a0000u + i;
	for (i = 0; i < pages; i++)
		if (p[i * ps / 4] != 0x5a5a0000u + i) {
			fprintf(stderr, "pfndemo-touch: page %ld lost its write\n", i);
			return 1;
		}
	munmap((void *)p, pages * ps);
	close(fd);
	printf("pfndemo-touch: %ld pages mapped, written and read back\n", pages);
	return 0;
}
