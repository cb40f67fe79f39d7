"""Support code of the reliability campaign (issue 10): corrupt images, the in-process media
bench, and the figures the campaign reports."""
