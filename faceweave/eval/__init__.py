"""faceweave.eval"""
