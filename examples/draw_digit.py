"""Draw a digit with the mouse and watch the model read it.

    python examples/draw_digit.py --model runs/default/model.npz

Left: a canvas; hold the left button and draw (dark ink on white, like paper).
Right: the model's probabilities, updated after every stroke, and the 28x28 it saw.
Keys: c clears, q quits. Needs a window (an interactive matplotlib backend); the DigitPad
class also runs headless, which is how the tests drive it with synthetic strokes.
"""
import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw

from tinycnn import load_model
from tinycnn.preprocess import to_mnist

CANVAS = 280


class DigitPad:
    """The drawing surface, the model and the figure that shows both."""

    def __init__(self, model, figure, pen_width=18):
        self.model, self.fig, self.pen = model, figure, pen_width
        self.names = model.class_names or [str(i) for i in range(10)]
        self.ax_draw = figure.add_subplot(1, 3, (1, 2))
        self.ax_seen = figure.add_subplot(2, 3, 3)
        self.ax_bars = figure.add_subplot(2, 3, 6)
        self.last = None
        self.prediction, self.proba = None, None
        self.clear()
        figure.canvas.mpl_connect("button_press_event", self.on_press)
        figure.canvas.mpl_connect("motion_notify_event", self.on_move)
        figure.canvas.mpl_connect("button_release_event", self.on_release)
        figure.canvas.mpl_connect("key_press_event", self.on_key)

    # -- drawing ---------------------------------------------------------------------------
    def clear(self):
        self.image = Image.new("L", (CANVAS, CANVAS), 255)
        self.draw = ImageDraw.Draw(self.image)
        self.prediction, self.proba = None, None
        self.ax_draw.clear()
        self.shown = self.ax_draw.imshow(np.asarray(self.image), cmap="gray", vmin=0, vmax=255)
        self.ax_draw.set_title("draw a digit (c: clear, q: quit)")
        self.ax_draw.set_xticks([])
        self.ax_draw.set_yticks([])
        for ax in (self.ax_seen, self.ax_bars):
            ax.clear()
            ax.set_xticks([])
            ax.set_yticks([])
        self.fig.canvas.draw_idle()

    def begin(self, x, y):
        self.last = (x, y)
        self.extend(x, y)

    def extend(self, x, y):
        if self.last is None:
            return
        r = self.pen / 2
        self.draw.line([self.last, (x, y)], fill=0, width=self.pen)
        self.draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
        self.last = (x, y)
        self.shown.set_data(np.asarray(self.image))
        self.fig.canvas.draw_idle()

    def end(self):
        self.last = None
        self.predict()

    def stroke(self, points):
        """Draw one stroke through canvas points [(x, y), ...] and predict (for scripts/tests)."""
        self.begin(*points[0])
        for x, y in points[1:]:
            self.extend(x, y)
        self.end()

    # -- the model -------------------------------------------------------------------------
    def predict(self):
        try:
            seen = to_mnist(self.image)
        except ValueError:
            return None
        self.proba = self.model.predict_proba(self.model.preprocess(seen[None]))[0]
        best = int(np.argmax(self.proba))
        self.prediction = self.names[best]
        self.ax_seen.clear()
        self.ax_seen.imshow(seen, cmap="gray")
        self.ax_seen.set_title("the model sees", fontsize=9)
        self.ax_seen.axis("off")
        self.ax_bars.clear()
        self.ax_bars.bar(range(len(self.proba)), self.proba,
                         color=["tab:green" if i == best else "tab:gray" for i in range(len(self.proba))])
        self.ax_bars.set_xticks(range(len(self.proba)), self.names)
        self.ax_bars.set_ylim(0, 1)
        self.ax_draw.set_title(f"it reads: {self.prediction} ({self.proba[best]:.0%})   (c: clear, q: quit)")
        self.fig.canvas.draw_idle()
        return self.prediction

    # -- mouse and keys --------------------------------------------------------------------
    def on_press(self, event):
        if event.inaxes is self.ax_draw and event.button == 1:
            self.begin(event.xdata, event.ydata)

    def on_move(self, event):
        if self.last is not None and event.inaxes is self.ax_draw:
            self.extend(event.xdata, event.ydata)

    def on_release(self, event):
        if self.last is not None:
            self.end()

    def on_key(self, event):
        if event.key == "c":
            self.clear()
        elif event.key == "q":
            import matplotlib.pyplot as plt
            plt.close(self.fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model.npz saved by tinycnn")
    args = parser.parse_args()
    import matplotlib.pyplot as plt
    if plt.get_backend().lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
        print("draw_digit.py needs a window, but matplotlib's backend is non-interactive "
              f"({plt.get_backend()}); run it on a desktop (or set MPLBACKEND=TkAgg)", file=sys.stderr)
        return 2
    fig = plt.figure(figsize=(9, 5))
    DigitPad(load_model(args.model), fig)
    plt.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
