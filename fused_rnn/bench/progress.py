"""A dependency-free progress bar on stderr (redrawn in place on a terminal, one line per
step otherwise, so logs stay readable)."""
import sys
import time


class Progress:
    def __init__(self, total, enabled=True, stream=None):
        self.total, self.done, self.enabled = total, 0, enabled and total > 1
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def clear(self):
        """Erases the bar on a terminal, so that a line printed next (the case's result, on
        stdout) starts at the left; the next step draws the bar again below it."""
        if self.enabled and self.tty and 0 < self.done < self.total:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def step(self, label):
        self.done += 1
        if not self.enabled:
            return
        width = 24
        fill = int(width * self.done / self.total)
        bar = "#" * fill + "-" * (width - fill)
        line = f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.start:5.0f}s {label}"
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
