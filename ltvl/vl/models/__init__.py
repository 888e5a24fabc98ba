"""VL backbones (UNITER-style, LXMERT, ViLT) behind one interface, and their presets."""
