"""faceweave.serve"""
